"""engine/detection/run.py: a detection run end to end on the demo CNN (SPEC §6), on models whose
manipulation the test makes by hand, so which units changed and by how much is known:
filters of relu3's conv swapped in pairs, or one filter copied into many units."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats

from fvaudit.engine.detection import evidence
from fvaudit.engine.detection.run import DetectError, Subject, detect, producer_weight
from fvaudit.engine.data.images import open_image_set
from fvaudit.engine.models.sources import load_model

LAYER = "relu3"


@pytest.fixture(scope="module")
def demo():
    return load_model("fmnist-cnn"), open_image_set("fashion-mnist:test", limit=300)


@pytest.fixture(scope="module")
def live(demo):
    """relu3's units that are not dead (SPEC §1) on the test images, under the unchanged model."""
    from fvaudit.engine.scans.activations import scan

    model, images = demo
    dead = set(scan(model, images, [LAYER], k=10, batch_size=100).layers[LAYER].dead_units)
    return [j for j in range(128) if j not in dead]


def _noisy(model, seed: int, scale: float = 0.01):
    """A benign stand-in: every parameter moved by `scale` × its own RMS of Gaussian noise."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.pow(2).mean().sqrt())
    return m


def _conv3(model):
    return model.module.conv3


def _embed(images):
    """A deterministic toy embedder: the image's pixels, 28×28 → 784-d (non-zero for every FMNIST image)."""
    def fn(ids):
        ids = np.asarray(ids)
        flat = [images.load_array(int(i)).astype(np.float64).ravel() + 1.0 for i in ids.ravel()]
        return np.stack(flat).reshape(*ids.shape, -1)
    return fn


def _population(model, n=3):
    return [Subject(f"benign-{s}", _noisy(model, 100 + s)) for s in range(n)]


def test_an_unchanged_copy_of_the_reference_shows_no_sign(demo):
    model, images = demo
    rep = detect(Subject("suspect", copy.deepcopy(model)), images, [LAYER], reference=Subject("ref", model),
                 population=_population(model), k=10, k_clip=5, embed_topk=_embed(images), batch_size=100)
    ld = rep.layers[LAYER]
    live = [j for j in range(ld.scores.suspicion.shape[0]) if j not in set(ld.dead_units)]
    for m in ("clip_delta", "tau_drop", "overlap_loss", "weight_distance"):
        assert np.allclose(ld.scores.values[m][live], 0.0, atol=1e-12), m
    assert ld.verdict.n_flagged == 0 and ld.verdict.verdict == "no sign"
    assert ld.layer_values["label_flip_rate"] == 0.0 and "label_flip_to" not in ld.layer_values
    assert rep.verdict.verdict == "no sign" and rep.regime == "reference"
    # an unchanged copy has size 0: the envelope expects the floor log ε there (a unit that did not
    # move), so every unit's residual is 0 and its suspicion the mid-rank of 0 among the benign residuals
    assert ld.layer_values["change_size"] == 0.0 and not ld.out_of_calibration
    env = ld.calibration["weight_distance"]
    assert env.expected(0.0) == pytest.approx(max(env.intercept + env.slope * math.log(1e-6), 0.0))
    r, r0 = env.residuals, 0.0 - env.expected(0.0)
    assert r0 <= 0.0
    assert ld.scores.per_measure["weight_distance"][live[0]] == pytest.approx(env.rank([r0], 0.0)[0])
    assert env.rank([r0], 0.0)[0] <= 0.5


def test_swapped_filters_are_the_most_suspicious_units_and_the_layer_is_manipulated(demo, live):
    model, images = demo
    sus = copy.deepcopy(model)
    w = _conv3(sus).weight.data
    pairs = list(zip(live[:8], live[8:16]))                 # 8 pairs of live units swap filters
    ref_w = producer_weight(model, LAYER)
    with torch.no_grad():
        for a, b in pairs:
            w[[a, b]] = w[[b, a]].clone()
            _conv3(sus).bias.data[[a, b]] = _conv3(sus).bias.data[[b, a]].clone()
    family = [Subject(f"benign-{i}", _noisy(model, 100 + i, scale=sc)) for i, sc in enumerate((0.3, 0.35, 0.4, 0.45, 0.5, 0.6))]
    rep = detect(Subject("suspect", sus), images, [LAYER], reference=Subject("ref", model),
                 population=family, k=10, k_clip=5, embed_topk=_embed(images), batch_size=100)
    ld = rep.layers[LAYER]
    swapped = sorted(j for p in pairs for j in p)
    # the unit measure is the relative L2 distance of the unit's filter, by hand:
    for a, b in pairs:
        want = np.linalg.norm(ref_w[b] - ref_w[a]) / np.linalg.norm(ref_w[a])
        assert ld.scores.values["weight_distance"][a] == pytest.approx(want, rel=1e-12)
    others = [j for j in range(ref_w.shape[0]) if j not in swapped and j not in set(ld.dead_units)]
    assert np.allclose(ld.scores.values["weight_distance"][others], 0.0)
    live_swapped = swapped
    s = np.where(np.isnan(ld.scores.suspicion), -1, ld.scores.suspicion)
    assert set(np.argsort(-s, kind="stable")[:len(live_swapped)].tolist()) == set(live_swapped)
    assert {u["unit"] for u in ld.verdict.top_units} <= set(live_swapped)    # the 10 listed
    # the benign family spans sizes up to the swap's, so the swap is judged, not out of calibration
    assert ld.layer_values["change_size"] < ld.layer_values["reach"] and not ld.out_of_calibration
    # the swapped units are also the localised ones: they moved beyond what the model's change explains
    loc = np.where(np.isnan(ld.localisation), -1, ld.localisation)
    assert set(np.argsort(-loc, kind="stable")[:len(live_swapped)].tolist()) == set(live_swapped)
    assert {u["unit"] for u in ld.localised(0.95)} <= set(live_swapped)
    # the layer's p-value: the count of flagged units under the clean family's beta-binomial
    from fvaudit.engine.detection.envelope import count_p_value

    n_live = int((~np.isnan(ld.scores.suspicion)).sum())
    assert ld.verdict.n_flagged >= len(live_swapped)
    assert ld.verdict.p_units == pytest.approx(count_p_value(ld.verdict.n_flagged, n_live, ld.overdispersion))
    # and the count of localised units under the family's own: the layer's p-value is Šidák over both
    n_loc = int((ld.localisation[~np.isnan(ld.localisation)] > 0.99).sum())
    assert ld.layer_values["localised_units"] == n_loc >= len(live_swapped)
    p_loc = count_p_value(n_loc, n_live, ld.overdispersion_localised)
    assert ld.verdict.layer_evidence["localised_units"] == pytest.approx(1 - p_loc)
    assert ld.verdict.p_value == pytest.approx(1 - (1 - min(ld.verdict.p_units, p_loc)) ** 2, rel=1e-12)
    assert ld.verdict.verdict == "manipulated" and rep.verdict.verdict == "manipulated"
    units = rep.units()[LAYER]
    assert units[0]["topk_reference"] != units[0]["topk_suspect"]
    # issue 22: the share of live units whose class-concept label moved, from the two top-k by hand
    from fvaudit.engine.measure.labels import class_concept_labels

    lab = np.asarray(images.labels)
    live_units = [u for u in units if not u["dead"]]
    moved = [class_concept_labels([u["topk_reference"]], lab, list(images.class_names))[0].label
             != class_concept_labels([u["topk_suspect"]], lab, list(images.class_names))[0].label for u in live_units]
    assert ld.layer_values["label_flip_rate"] == pytest.approx(np.mean(moved)) and np.mean(moved) > 0
    summary = rep.summary()
    assert summary["verdict"] == "manipulated" and summary["layers"][LAYER]["n_flagged"] == len(live_swapped)


def test_without_a_reference_a_class_taking_over_many_units_is_flagged(demo):
    model, images = demo
    pop = [Subject("clean-0", model)] + _population(model, 3)
    base = detect(Subject("clean copy", _noisy(model, 7)), images, [LAYER], population=pop, k=10, batch_size=100)
    assert base.regime == "population"
    # copy the filter of the unit most devoted to one class into 40 units: that class gains 40 majorities
    ld0 = base.layers[LAYER]
    lab = np.asarray(images.labels)
    frac = [(np.bincount(lab[ids], minlength=10).max(), j) for j, ids in enumerate(ld0.topk_suspect)
            if j not in set(ld0.dead_units)]
    donor = max(frac)[1]
    cls = int(np.bincount(lab[ld0.topk_suspect[donor]], minlength=10).argmax())
    sus = copy.deepcopy(model)
    targets = [j for j in range(128) if j != donor][:40]
    with torch.no_grad():
        for j in targets:
            _conv3(sus).weight.data[j] = _conv3(sus).weight.data[donor]
            _conv3(sus).bias.data[j] = _conv3(sus).bias.data[donor]
    rep = detect(Subject("suspect", sus), images, [LAYER], population=pop, k=10, batch_size=100)
    ld = rep.layers[LAYER]
    assert ld.class_evidence.flagged_class == cls
    # wiring: the layer's class shares are those of the majority classes, computed directly
    maj = evidence.majority_classes(ld.topk_suspect, lab, 10, ld.dead_units)
    assert np.array_equal(ld.class_evidence.shares, evidence.class_shares(maj, 10))
    # with 4 clean models a whole-model shift cannot be told from chance below p ≈ 1e-3 (Student's t with
    # 3 degrees of freedom, the units' counts overdispersed): the layer is flagged, the claim bounded
    assert ld.verdict.verdict in ("suspicious", "manipulated") and ld.verdict.p_value < 0.01, ld.verdict.to_dict()
    assert base.layers[LAYER].verdict.verdict == "no sign", base.layers[LAYER].verdict.to_dict()
    top = {u["unit"] for u in ld.verdict.top_units}
    assert top <= set(targets) | {donor}


def test_bad_arguments_say_which(demo):
    model, images = demo
    with pytest.raises(DetectError, match="population: without a reference, at least 2"):
        detect(Subject("s", model), images, [LAYER], population=[Subject("p", model)])
    with pytest.raises(DetectError, match="with a reference, at least 1 benign"):
        detect(Subject("s", model), images, [LAYER], reference=Subject("r", model))
    with pytest.raises(DetectError, match="k_clip"):
        detect(Subject("s", model), images, [LAYER], reference=Subject("r", model),
               population=[Subject("p", model)], k=5, k_clip=6)
    with pytest.raises(DetectError, match="'class_share' is not a measure of the reference regime"):
        detect(Subject("s", model), images, [LAYER], reference=Subject("r", model),
               population=[Subject("p", model)], measures=["class_share"])


def test_synthetic_change_joins_the_reference_measures(demo, live):
    """With synthetic options every unit is rendered with the same seeds under each model; an unchanged
    copy renders the reference's images exactly, so its synthetic change is the floor's offset alone,
    and a swapped unit's images are another unit's: far beyond the benign copies' values."""
    from fvaudit.engine.detection.run import SyntheticOptions, synthetic_embeddings

    model, images = demo
    sus = copy.deepcopy(model)
    a, b = live[0], live[1]
    with torch.no_grad():
        w = _conv3(sus).weight.data
        w[[a, b]] = w[[b, a]].clone()
        _conv3(sus).bias.data[[a, b]] = _conv3(sus).bias.data[[b, a]].clone()

    def embed_images(imgs):
        return np.stack([np.asarray(im, dtype=np.float64).ravel() + 1.0 for im in imgs])

    opts = SyntheticOptions(seeds=(0, 1), steps=4)
    ref, same = Subject("ref", model), Subject("same", copy.deepcopy(model))
    rep = detect(Subject("suspect", sus), images, [LAYER], reference=ref, population=_population(model, 2) + [same],
                 k=10, k_clip=5, embed_topk=_embed(images), synthetic=opts, embed_images=embed_images, batch_size=100)
    ld = rep.layers[LAYER]
    assert "synthetic_change" in ld.scores.values and ld.benign_sizes["synthetic_change"] > 0
    e_ref = synthetic_embeddings(ref, LAYER, opts, embed_images)
    assert e_ref.shape[:2] == (128, 2)
    # the unchanged copy renders bit-identical images: cross = 1 for every unit, so with 2 seeds (one
    # pair per unit: the floor) its values are (floor − 1) / σ, σ the spread of the floors over units
    assert np.array_equal(synthetic_embeddings(same, LAYER, opts, embed_images), e_ref)
    got = evidence.synthetic_change(e_ref, synthetic_embeddings(same, LAYER, opts, embed_images))
    floor = got["floor"]
    assert np.allclose(got["cross"], 1.0, atol=1e-12)
    assert np.allclose(got["synthetic_change"], (floor - 1.0) / floor.std(), rtol=1e-9)
    # the swapped units render each other's images: their synthetic change tops every other live unit's
    sc = ld.scores.values["synthetic_change"]
    others = [j for j in live if j not in (a, b)]
    assert min(sc[a], sc[b]) > np.nanmax(sc[others])
    with pytest.raises(DetectError, match="synthetic: synthetic change needs a reference"):
        detect(Subject("s", model), images, [LAYER], population=[Subject("p", model), Subject("q", model)],
               synthetic=opts, embed_images=embed_images)


def test_one_clean_model_gives_an_inconclusive_verdict_not_a_p_value(demo, live):
    """Issue 19 item 9: a clean suspect that drifted a little further than the one clean model has every
    unit beyond every benign value, so every unit gets the same, maximal suspicion; the detection must
    say that one clean model cannot support a verdict instead of flagging every unit at p < 1e-15."""
    from fvaudit.engine.detection.run import MIN_CLEAN_MODELS, too_few_clean_models

    model, images = demo
    suspect = Subject("clean, drifted further", _noisy(model, 7, scale=0.05))
    rep = detect(suspect, images, [LAYER], reference=Subject("ref", model), population=_population(model, 1),
                 k=10, k_clip=5, batch_size=100)
    ld = rep.layers[LAYER]
    env = ld.calibration["weight_distance"]
    # the failure the old verdict hid: every live unit's weight distance lies beyond all benign values
    size = ld.layer_values["change_size"]
    assert np.allclose(ld.scores.per_measure["weight_distance"][live], env.rank([1e9], size)[0])
    assert rep.verdict.verdict == ld.verdict.verdict == "inconclusive"
    assert rep.verdict.p_value is None and ld.verdict.p_value is None
    assert ld.verdict.n_flagged is None and ld.verdict.p_units is None and ld.verdict.expected_flagged is None
    assert rep.warnings == [too_few_clean_models("reference", 1)]
    assert "1 clean model in the population" in rep.warnings[0] and "at least 3" in rep.warnings[0]
    s = rep.summary()
    assert s["verdict"] == "inconclusive" and s["p_value"] is None and s["warnings"] == rep.warnings
    assert s["layers"][LAYER]["verdict"] == "inconclusive" and s["layers"][LAYER]["n_flagged"] is None
    # the units are still ranked (what moved most), only the claim of how unlikely it is goes
    assert len(ld.verdict.top_units) == 10 and ld.verdict.n_units == len(live)
    # at the minimum the same suspect is judged, with a p-value and flags
    rep2 = detect(suspect, images, [LAYER], reference=Subject("ref", model), population=_population(model, 3),
                  k=10, k_clip=5, batch_size=100)
    assert rep2.warnings == [] and rep2.layers[LAYER].verdict.n_flagged is not None
    # having drifted 5× further than the clean models did, it lies beyond their reach; its evidence,
    # judged against the nearest of them, shows nothing, so it is cleared (an honest drift, no false alarm)
    assert rep2.layers[LAYER].out_of_calibration and rep2.layers[LAYER].verdict.p_value is not None
    assert rep2.verdict.verdict == "no sign"
    assert MIN_CLEAN_MODELS == {"reference": 3, "population": 4}
    assert too_few_clean_models("reference", 3) is None and too_few_clean_models("population", 4) is None
    assert "at least 4 clean models of the family" in too_few_clean_models("population", 3)
    assert "at least 3 benign fine-tunes" in too_few_clean_models("reference", 2)


def test_inconclusive_drops_the_p_value_and_flags_of_a_verdict_and_its_layers():
    layer = evidence.Verdict("relu3", "manipulated", 1e-16, 113, 113, 5.65, 1e-16, {"layer_weight_distance": 0.75},
                      [{"unit": 4, "suspicion": 0.99}], None)
    model = evidence.model_verdict([layer])
    out = evidence.inconclusive(model)
    assert (out.verdict, out.p_value, out.n_units, out.n_flagged, out.expected_flagged, out.p_units) == \
        ("inconclusive", None, 113, None, None, None)
    assert out.top_units == [{"unit": 4, "suspicion": 0.99, "layer": "relu3"}]
    assert [(x.name, x.verdict, x.p_value, x.n_flagged) for x in out.layers] == [("relu3", "inconclusive", None, None)]
    assert model.verdict == "manipulated"          # the original is left as it was
