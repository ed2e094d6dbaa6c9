"""SPEC §4 measures on inputs small enough to compute by hand.

Unit vectors used throughout: a = (1, 0), b = (0, 1), c = (0.6, 0.8);
cos(a, b) = 0, cos(a, c) = 0.6, cos(b, c) = 0.8.
"""
import numpy as np
import pytest
import torch

from fvaudit.engine.scans.activations import layer_scores, run_captured
from fvaudit.engine.models.loaded import ModelError
from fvaudit.engine.models.sources import load_model
from fvaudit.engine.measure.synthetic import (embed_images, natural_synthetic_agreement, synthetic_clip_delta,
                                               synthetic_transfer, unit_scores_of_images)

A, B, C = [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]


def test_synthetic_clip_delta_by_hand():
    e_init = np.array([[A, A], [C, C]])
    e_final = np.array([[A, B], [C, C]])
    d = synthetic_clip_delta(e_init, e_final)
    # unit 0: C^ii_00 = 1, C^if_00 = mean cos(a, {a, b}) = 0.5, denominator C^ii_01 = cos(a, c) = 0.6
    # unit 1: unchanged images → exactly 0
    np.testing.assert_allclose(d, [0.5 / 0.6, 0.0], rtol=1e-12)
    assert d[1] == 0.0
    assert d.shape == (2,) and d.dtype == np.float64


def test_synthetic_clip_delta_nan_and_bad_shapes():
    # orthogonal units: the denominator (similarity to the other unit) is 0 → NaN
    d = synthetic_clip_delta(np.array([[A], [B]]), np.array([[B], [B]]))
    assert np.isnan(d).all()
    with pytest.raises(ValueError, match="at least 2 units"):
        synthetic_clip_delta(np.array([[A]]), np.array([[A]]))
    with pytest.raises(ValueError, match="units"):
        synthetic_clip_delta(np.array([[A], [B]]), np.array([[A], [B], [C]]))


def test_synthetic_transfer_by_hand_and_nan():
    a_init = np.array([[2.0, 4.0], [1.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    a_final = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    vm_init = np.array([2.0, 4.0, 1.0, 1.0])
    vm_final = np.array([1.0, 8.0, 0.0, 1.0])
    t = synthetic_transfer(a_init, a_final, vm_init, vm_final)
    # unit 0: (1.5 / 1) / (3 / 2) = 1; unit 1: (2 / 8) / (2 / 4) = 0.5
    # unit 2: silent on the validation set under θ_final → NaN; unit 3: zero denominator → NaN
    np.testing.assert_allclose(t[:2], [1.0, 0.5], rtol=1e-12)
    assert np.isnan(t[2]) and np.isnan(t[3])
    assert t.shape == (4,)
    # a unit dead under θ_init (validation mean 0) is undefined too, not inf
    assert np.isnan(synthetic_transfer([[1.0]], [[1.0]], [0.0], [1.0]))[0]
    with pytest.raises(ValueError, match="val_mean_init"):
        synthetic_transfer(a_init, a_final, vm_init[:2], vm_final)
    with pytest.raises(ValueError, match="a_final_on_init"):
        synthetic_transfer(a_init, a_final[:, :1], vm_init, vm_final)


def test_natural_synthetic_agreement_by_hand():
    e_nat = np.array([[A, A], [B, B], [C, C]])
    e_syn = np.array([[A, C], [B, B], [C, C]])
    g = natural_synthetic_agreement(e_nat, e_syn)
    # unit 0: C(T0, S0) = (1 + 0.6) / 2 = 0.8; others: C(T0, S1) = 0, C(T0, S2) = 0.6 → 0.8 / 0.3
    # unit 1: C(T1, S1) = 1; C(T1, S0) = (0 + 0.8) / 2 = 0.4, C(T1, S2) = 0.8 → 1 / 0.6
    # unit 2: C(T2, S2) = 1; C(T2, S0) = (0.6 + 1) / 2 = 0.8, C(T2, S1) = 0.8 → 1 / 0.8
    np.testing.assert_allclose(g, [0.8 / 0.3, 1 / 0.6, 1.25], rtol=1e-12)
    # the number of natural (k) and synthetic (n) images may differ
    g2 = natural_synthetic_agreement(np.array([[A, A, A], [C, C, C]]), np.array([[A], [C]]))
    np.testing.assert_allclose(g2, [1 / 0.6, 1 / 0.6], rtol=1e-12)


def test_natural_synthetic_agreement_nan_and_bad_shapes():
    g = natural_synthetic_agreement(np.array([[A], [B]]), np.array([[A], [B]]))
    assert np.isnan(g).all()  # orthogonal: similarity to the other unit's images is 0
    with pytest.raises(ValueError, match="at least 2 units"):
        natural_synthetic_agreement(np.array([[A]]), np.array([[A]]))
    with pytest.raises(ValueError, match="units"):
        natural_synthetic_agreement(np.array([[A], [B]]), np.array([[A], [B], [C]]))


@pytest.fixture(scope="module")
def demo():
    return load_model("fmnist-cnn")


def test_unit_scores_of_images_match_the_scan_path(demo):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 3, 28, 28, 1), dtype=np.uint8)
    units = [4, 9]
    got = unit_scores_of_images(demo, "relu3", units, imgs)
    assert got.shape == (2, 3) and got.dtype == np.float64
    # the scan's path: the model's own preprocessing of uint8 pixels, then a_j of SPEC §1
    with torch.no_grad():
        s, _ = layer_scores(demo.module, demo.preprocess_many(imgs.reshape(6, 28, 28)), ["relu3"])
    want = s["relu3"].numpy().reshape(2, 3, -1)
    np.testing.assert_allclose(got, [want[0, :, 4], want[1, :, 9]], rtol=1e-5)
    # channel mean of the pre-ReLU conv: can be negative
    cm = unit_scores_of_images(demo, "conv3", units, imgs, objective="channel_mean")
    with torch.no_grad():
        o, _ = run_captured(demo.module, demo.preprocess_many(imgs.reshape(6, 28, 28)), ["conv3"])
    m = o["conv3"].mean(dim=(2, 3)).numpy().reshape(2, 3, -1)
    np.testing.assert_allclose(cm, [m[0, :, 4], m[1, :, 9]], rtol=1e-5, atol=1e-6)


def test_unit_scores_of_images_bad_inputs(demo):
    imgs = np.zeros((2, 1, 28, 28, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="images: 2 units of images but 1 units"):
        unit_scores_of_images(demo, "relu3", [0], imgs)
    with pytest.raises(ValueError, match="does not match the model input"):
        unit_scores_of_images(demo, "relu3", [0, 1], np.zeros((2, 1, 14, 14, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        unit_scores_of_images(demo, "relu3", [0, 1], imgs.astype(np.float32))
    with pytest.raises(ModelError, match="unit index 999"):
        unit_scores_of_images(demo, "relu3", [0, 999], imgs)
    with pytest.raises(ValueError, match="objective"):
        unit_scores_of_images(demo, "relu3", [0, 1], imgs, objective="max")


def test_embed_images_grayscale_and_rgb():
    from fvaudit.engine.measure.embedders import ClassifierFeatureEmbedder

    emb = ClassifierFeatureEmbedder(batch_size=4)
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    e = embed_images(emb, gray)
    assert e.shape == (3, emb.dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # a gray image is embedded as its RGB copy would be (natural gray images are too)
    np.testing.assert_allclose(e, embed_images(emb, np.repeat(gray, 3, axis=-1)), atol=1e-6)
    with pytest.raises(ValueError, match="images: expected"):
        embed_images(emb, gray[..., 0])
