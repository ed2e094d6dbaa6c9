"""CLIP-Dissect's soft-WPMI (issue 22) on a hand-checkable similarity matrix, the vocabulary, and
its unavailable state offline (the stand-in embedder has no text tower: no label, never a fake one)."""
import math

import numpy as np
import pytest

from fvaudit.engine.measure import clip_dissect as cd


def test_soft_wpmi_by_hand():
    # a = 1: p(t|x) = softmax of the cosines; image 0 is 3:1 concept 0, image 1 even, image 2 1:3
    sim = np.array([[math.log(3), 0.0], [0.0, 0.0], [0.0, math.log(3)]])
    act = np.array([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])        # unit 0 likes image 0, unit 1 image 2
    # top 2 with p_in = 1, 0.75: log p(t|u0) = log(¾) + log(¼ + ¾·½) for t0, log(¼) + log(0.625) for t1;
    # log p(t) = log mean over the 2 units = log(0.3125) for both; WPMI = log 1.5 and log 0.5
    w = cd.soft_wpmi(sim, act, top_k=2, a=1.0, lam=1.0, p_start=1.0, p_end=0.5, min_prob=0.0)
    np.testing.assert_allclose(w, [[math.log(1.5), math.log(0.5)], [math.log(0.5), math.log(1.5)]], rtol=1e-12)
    # λ = 0: the plain log p(t | unit)
    w0 = cd.soft_wpmi(sim, act, top_k=2, a=1.0, lam=0.0, p_start=1.0, p_end=0.5, min_prob=0.0)
    assert w0[0, 0] == pytest.approx(math.log(0.75 * 0.625))
    # top_k above N is capped; bad shapes and values say which
    assert cd.soft_wpmi(sim, act, top_k=50).shape == (2, 2)
    with pytest.raises(ValueError, match="share N"):
        cd.soft_wpmi(sim, act[:2])
    with pytest.raises(ValueError, match="p_start"):
        cd.soft_wpmi(sim, act, p_start=0.5, p_end=0.9)


def test_a_concept_every_unit_shows_is_discounted():
    # concept 1 is on every image (a background): without the prior it would win for both units
    sim = np.array([[1.0, 1.2], [0.0, 1.2], [0.0, 1.2], [1.0, 1.2]])
    act = np.array([[5.0, 0.0], [0.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    raw = cd.soft_wpmi(sim, act, top_k=2, lam=0.0)
    pmi = cd.soft_wpmi(sim, act, top_k=2, lam=1.0)
    assert raw[0].argmax() == 1 and pmi[0].argmax() == 0


class _FakeClip:
    """A stand-in with both towers and fixed vectors: the wiring, not CLIP, is under test."""
    is_clip = True
    id = "fake-clip"

    def embed(self, images):
        return np.stack([np.asarray(im, dtype=np.float64) for im in images])

    def embed_text(self, texts):
        return np.stack([[1.0, 0.0] if "stripe" in t else [0.0, 1.0] for t in texts])


def test_labels_through_an_embedder_and_dead_units():
    images = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.9, 0.1])]
    act = np.array([[5.0, 0.0, 1.0], [0.1, 4.0, 1.0], [4.0, 0.2, 1.0]])      # unit 0 ~ stripes, unit 1 ~ dots
    labels = cd.clip_dissect_labels(_FakeClip(), act, images, ["a stripe", "a dot"], dead=[2], top_k=2)
    assert [l.concept for l in labels] == ["a stripe", "a dot", None]
    assert labels[0].score > 0 and labels[2].to_json() == {"concept": None, "score": None}


def test_unavailable_offline_with_the_stand_in_embedder():
    from fvaudit.engine.measure.embedders import ClassifierFeatureEmbedder, EmbedderError

    stand_in = ClassifierFeatureEmbedder.__new__(ClassifierFeatureEmbedder)   # no weights needed to ask
    stand_in.id, stand_in.description, stand_in.is_clip = "classifier:efficientnet-lite0:pooled", "EfficientNet-Lite0", False
    why = cd.unavailable_reason(stand_in)
    assert why is not None and "no text tower" in why and "no CLIP-Dissect label" in why
    with pytest.raises(cd.ClipDissectUnavailable, match="real CLIP"):
        cd.clip_dissect_labels(stand_in, np.ones((2, 1)), [np.zeros(2)] * 2, ["dog"])
    with pytest.raises(EmbedderError, match="no text tower"):
        stand_in.embed_text(["dog"])
    assert cd.unavailable_reason(None) is not None


def test_vocabulary_is_class_names_then_common_words():
    vocab = cd.concept_vocabulary(["Bag", "Sneaker", "bag"])
    assert vocab[:2] == ["Bag", "Sneaker"] and "stripe" in vocab and "dog" in vocab
    assert len({v.lower() for v in vocab}) == len(vocab)              # de-duplicated, case-insensitively
    assert cd.concept_vocabulary(["Bag"], extra=["bag", "strap"]) == ["Bag", "strap"]
