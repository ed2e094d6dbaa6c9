"""SPEC §6 detection: each evidence measure on inputs small enough to compute by hand,
the calibration, the combination rule, the verdicts and the unit ROC AUC.

Unit vectors used throughout: a = (1, 0), b = (0, 1), c = (0.6, 0.8);
cos(a, b) = 0, cos(a, c) = 0.6, cos(b, c) = 0.8.
"""
import math

import numpy as np
import pytest
from scipy import stats

from fvaudit.engine.detection import evidence
from fvaudit.engine.measure import clip_delta

A, B, C = [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]


# --------------------------------------------------------------------------- with a reference

def test_topk_change_by_hand():
    ids_ref = np.array([[0, 1], [2, 3]])
    ids_sus = np.array([[1, 0], [2, 4]])
    emb_ref = np.array([[A, A], [C, C]])
    emb_sus = np.array([[A, A], [C, B]])
    r_ref = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    r_sus = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])
    m = evidence.topk_change(ids_ref, ids_sus, emb_ref, emb_sus, r_ref, r_sus)
    # overlap: unit 0 the same set in another order (1), unit 1 one of two kept (0.5)
    np.testing.assert_array_equal(m["overlap_loss"], [0.0, 0.5])
    # CLIP-δ unit 1: (C^ii_11 = 1 − C^if_11 = mean cos(c, {c, b}) = 0.9) / cos(c, a) = 0.6
    np.testing.assert_allclose(m["clip_delta"], [0.0, 0.1 / 0.6], rtol=1e-12)
    np.testing.assert_array_equal(m["clip_delta"], clip_delta(emb_ref, emb_sus))   # metrics' formula, reused
    # τ unit 1: pairs (0,1) and (0,2) concordant, (1,2) discordant → τ = 1/3 → drop 2/3
    np.testing.assert_allclose(m["tau_drop"], [0.0, 2.0 / 3.0], atol=1e-12)
    assert set(evidence.topk_change(ids_ref, ids_sus, emb_ref, emb_sus)) == {"clip_delta", "overlap_loss"}
    with pytest.raises(ValueError, match="r_ref / r_sus"):
        evidence.topk_change(ids_ref, ids_sus, emb_ref, emb_sus, r_ref, None)


def test_synthetic_change_by_hand():
    e_ref = np.array([[A, C], [B, C]])      # seed-to-seed cosines: unit 0 0.6, unit 1 0.8 → σ = 0.1
    e_sus = np.array([[A, C], [A, B]])      # cross: unit 0 mean(1, 1) = 1, unit 1 mean(0, 0.8) = 0.4
    out = evidence.synthetic_change(e_ref, e_sus)
    np.testing.assert_allclose(out["floor"], [0.6, 0.8], rtol=1e-12)
    np.testing.assert_allclose(out["cross"], [1.0, 0.4], rtol=1e-12)
    # z = (floor − cross) / σ: unit 0 closer than another seed (−4), unit 1 further (+4)
    np.testing.assert_allclose(out["synthetic_change"], [-4.0, 4.0], rtol=1e-9)
    # embeddings are normalised here: a scaled copy gives the same numbers
    np.testing.assert_allclose(evidence.synthetic_change(3 * e_ref, 2 * e_sus)["synthetic_change"], [-4.0, 4.0], rtol=1e-9)
    # no seed noise at all (σ = 0) → undefined, not infinite
    flat = evidence.synthetic_change(np.array([[A, A], [B, B]]), np.array([[A, A], [A, A]]))
    assert np.isnan(flat["synthetic_change"]).all()
    with pytest.raises(ValueError, match="n ≥ 2 seeds"):
        evidence.synthetic_change(np.array([[A], [B]]), np.array([[A], [B]]))
    with pytest.raises(ValueError, match="shapes differ"):
        evidence.synthetic_change(e_ref, e_sus[:1])
    with pytest.raises(ValueError, match="all-zero"):
        evidence.synthetic_change(np.array([[A, [0.0, 0.0]]]), np.array([[A, A]]))


def test_weight_distances_by_hand():
    w_ref = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    w_sus = np.array([[0.0, 0.0], [1.0, 0.5], [1.0, 0.0]])
    d = evidence.unit_weight_distance(w_ref, w_sus)
    # ‖(−3, −4)‖ / 5 = 1; ‖(0, 0.5)‖ / 1 = 0.5; a pruned (all-zero) reference filter → NaN
    np.testing.assert_allclose(d[:2], [1.0, 0.5], rtol=1e-12)
    assert np.isnan(d[2])
    # a conv weight [C_out, C_in, kh, kw]: one row per unit
    np.testing.assert_allclose(evidence.unit_weight_distance(w_ref[:2].reshape(2, 1, 1, 2), w_sus[:2].reshape(2, 1, 1, 2)),
                               [1.0, 0.5], rtol=1e-12)
    layers = evidence.layer_weight_distance(
        {"conv1": [np.array([[3.0], [4.0]]), np.array([0.0])], "fc": np.array([1.0, 1.0])},
        {"conv1": [np.array([[3.0], [4.0]]), np.array([5.0])], "fc": np.array([1.0, 1.0])})
    # conv1: weight and bias together, ‖(0, 0, 5)‖ / ‖(3, 4, 0)‖ = 1; fc unchanged = 0
    assert layers == {"conv1": 1.0, "fc": 0.0}
    with pytest.raises(ValueError, match="not in both"):
        evidence.layer_weight_distance({"a": np.ones(2)}, {"b": np.ones(2)})
    with pytest.raises(ValueError, match="w_ref"):
        evidence.unit_weight_distance(np.ones((2, 2)), np.ones((3, 2)))


def test_reference_measures_bundle_and_dead_units():
    ids = np.array([[0, 1], [2, 3], [4, 5]])
    emb_ref = np.array([[A, A], [C, C], [B, B]])
    m = evidence.reference_measures(ids, ids[[0, 1, 2]], emb_ref, emb_ref,
                             synth_ref=np.array([[A, C], [B, C], [A, B]]), synth_sus=np.array([[A, C], [A, B], [A, B]]),
                             w_ref=np.ones((3, 2)), w_sus=np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]]),
                             dead_units=[2])
    assert set(m) == {"clip_delta", "overlap_loss", "synthetic_change", "weight_distance"}
    np.testing.assert_allclose(m["weight_distance"][:2], [0.0, 1.0 / math.sqrt(2.0)], rtol=1e-12)
    np.testing.assert_array_equal(m["overlap_loss"][:2], [0.0, 0.0])
    for v in m.values():                     # the dead unit has no evidence at all
        assert v.shape == (3,) and np.isnan(v[2])
    with pytest.raises(ValueError, match="synth_ref / synth_sus"):
        evidence.reference_measures(ids, ids, emb_ref, emb_ref, synth_ref=np.array([[A, C], [B, C], [A, B]]))


# --------------------------------------------------------------------------- without a reference

LABELS = np.array([0, 0, 1, 1, 2, 2])            # class of image id 0..5
TOPK = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 0], [0, 2, 4]])


def test_majority_classes_and_shares():
    # unit 0 classes (0, 0, 1) → 0; unit 1 (1, 1, 2) → 1; unit 2 (2, 2, 0) → 2; unit 3 (0, 1, 2) a tie → 0
    np.testing.assert_array_equal(evidence.majority_classes(TOPK, LABELS, 3), [0, 1, 2, 0])
    maj = evidence.majority_classes(TOPK, LABELS, 3, dead_units=[1])
    np.testing.assert_array_equal(maj, [0, -1, 2, 0])
    # the dead unit is left out of the shares: 2 of 3 live units say class 0
    np.testing.assert_allclose(evidence.class_shares(maj, 3), [2 / 3, 0.0, 1 / 3], rtol=1e-12)
    with pytest.raises(ValueError, match="no live unit"):
        evidence.class_shares([-1, -1], 3)
    with pytest.raises(ValueError, match="image_labels"):
        evidence.majority_classes(TOPK, LABELS, 2)           # label 2 is not a class of 2
    with pytest.raises(ValueError, match="topk_ids"):
        evidence.majority_classes(TOPK + 3, LABELS, 3)       # ids past the end


def test_class_share_evidence_against_hand_made_population():
    population = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])   # two clean models, class 2 never a majority
    ev = evidence.class_share_evidence([0.2, 0.3, 0.5], population, n_units=10)
    np.testing.assert_allclose(ev.pop_mean, [0.4, 0.6, 0.0], atol=1e-12)
    # sample variance 0.02 for classes 0 and 1, 0 for class 2; binomial floors p̃(1 − p̃)/10 with
    # p̃ = (Σ shares·10 + 1)/(2·10 + 3) = 9/23, 13/23, 1/23 — the floor is the larger in all three
    floor = [(9 / 23) * (14 / 23) / 10, (13 / 23) * (10 / 23) / 10, (1 / 23) * (22 / 23) / 10]
    np.testing.assert_allclose(ev.pop_sd, np.sqrt(floor), rtol=1e-12)
    np.testing.assert_allclose(ev.z, (np.array([0.2, 0.3, 0.5]) - [0.4, 0.6, 0.0]) / np.sqrt(floor), rtol=1e-12)
    assert ev.flagged_class == 2                   # the class that gained names the decoy
    # tail (1 + #{population ≥ share}) / 3: class 0 both ≥ 0.2, class 1 both ≥ 0.3, class 2 none ≥ 0.5
    np.testing.assert_allclose(ev.tail, [1.0, 1.0, 1 / 3], rtol=1e-12)
    # the prediction statistic of one new model against 2 whose spread is estimated: z/√(1 + 1/2)
    # under Student's t with 1 degree of freedom (issue 24), Šidák over 3 classes
    z2 = 0.5 / math.sqrt(floor[2])
    assert ev.p_value == pytest.approx(1 - stats.t.cdf(z2 / math.sqrt(1.5), df=1) ** 3, rel=1e-12)
    assert ev.p_value > 1 - stats.norm.cdf(z2) ** 3          # wider than the normal tail it replaced
    # two clean models cannot make a 0.5 share unlikely enough to flag (the normal said p < 1e-13)
    assert ev.p_value > 0.05 and ev.suspicion == 1 - ev.p_value

    # a population spread wider than the binomial floor: its sample variance is the scale
    ev2 = evidence.class_share_evidence([0.4, 0.6], [[0.0, 1.0], [0.8, 0.2]], n_units=10)
    np.testing.assert_allclose(ev2.pop_sd, [math.sqrt(0.32)] * 2, rtol=1e-12)
    np.testing.assert_allclose(ev2.z, [0.0, 0.0], atol=1e-12)
    assert ev2.flagged_class == 0 and ev2.p_value == pytest.approx(0.75, abs=1e-12)   # 1 − Φ(0)² = 3/4
    with pytest.raises(ValueError, match="population"):
        evidence.class_share_evidence([0.5, 0.5], [[1.0, 0.0, 0.0]], n_units=10)


def test_unit_class_evidence_by_hand():
    ev = evidence.ClassShareEvidence(shares=np.zeros(3), pop_mean=np.zeros(3), pop_sd=np.ones(3),
                              z=np.array([2.0, -1.0, 4.0]), tail=np.ones(3), flagged_class=2, p_value=0.5)
    e = evidence.unit_class_evidence(TOPK, LABELS, ev, dead_units=[3])
    # Σ_c max(z_c, 0)·frac: (0,0,1) → 2·2/3; (1,1,2) → 4/3; (2,2,0) → 4·2/3 + 2/3; dead → NaN
    np.testing.assert_allclose(e[:3], [4 / 3, 4 / 3, 10 / 3], rtol=1e-12)
    assert np.isnan(e[3])


# --------------------------------------------------------------------------- calibration

def test_calibration_ecdf_values_exact():
    cal = evidence.Calibration.fit({"m": [4.0, 2.0, np.nan, 1.0, 3.0], "t": [1.0, 1.0, 2.0]})
    np.testing.assert_array_equal(cal.benign["m"], [1.0, 2.0, 3.0, 4.0])     # sorted, NaN dropped
    s = cal.suspicion("m", [0.0, 1.0, 2.5, 4.0, 10.0, np.nan])
    # (#{b < v} + ½#{b = v} + ½) / (n + 1), n = 4
    np.testing.assert_allclose(s[:5], [0.5 / 5, 1.0 / 5, 2.5 / 5, 4.0 / 5, 4.5 / 5], rtol=1e-12)
    assert np.isnan(s[5])
    assert cal.suspicion("t", [1.0])[0] == pytest.approx(1.5 / 4)               # ties count half
    # unseen extremes stay strictly inside (0, 1)
    assert 0 < cal.suspicion("m", [-1e300])[0] and cal.suspicion("m", [1e300])[0] < 1
    grid = np.linspace(-2, 7, 301)
    assert (np.diff(cal.suspicion("m", grid)) >= 0).all()                       # monotone
    assert evidence.Calibration.from_dict(cal.to_dict()).benign.keys() == cal.benign.keys()
    with pytest.raises(ValueError, match="not calibrated"):
        cal.suspicion("x", [1.0])
    with pytest.raises(ValueError, match="no finite benign value"):
        evidence.Calibration.fit({"m": [np.nan]})


def test_calibration_makes_benign_values_uniform():
    rng = np.random.default_rng(0)
    cal = evidence.Calibration.fit({"m": rng.lognormal(size=9999)})
    s = cal.suspicion("m", rng.lognormal(size=20000))      # fresh benign values, same distribution
    # levels (i + ½)/10000: P(s > 0.95) = 500/10000 in expectation over calibration sets; sd ≈ 0.0022
    # from the calibration sample and 0.0015 from the 20000 fresh values
    assert abs((s > 0.95).mean() - 0.05) < 0.008
    assert stats.kstest(s, "uniform").statistic < 0.02
    # in-sample, the calibration values themselves take the levels 1/10000 … 9999/10000 once each
    np.testing.assert_allclose(np.sort(cal.suspicion("m", cal.benign["m"])), np.arange(1, 10000) / 10000, rtol=1e-12)


# --------------------------------------------------------------------------- combination

def test_combine_by_hand():
    out = evidence.combine({"a": [0.9, 0.5, np.nan, np.nan], "b": [0.8, 0.7, 0.6, np.nan]})
    # (max s)^m over the defined measures
    np.testing.assert_allclose(out[:3], [0.81, 0.49, 0.6], rtol=1e-12)
    assert np.isnan(out[3])
    with pytest.raises(ValueError, match="different unit counts"):
        evidence.combine({"a": [0.5], "b": [0.5, 0.5]})


def test_combine_keeps_independent_benign_uniform_and_correlated_conservative():
    rng = np.random.default_rng(1)
    u = rng.uniform(size=(3, 50000))
    s = evidence.combine({"a": u[0], "b": u[1], "c": u[2]})
    assert stats.kstest(s, "uniform").statistic < 0.01
    assert abs((s > 0.95).mean() - 0.05) < 0.004
    # the same evidence three times (perfect correlation) flags fewer benign units, never more
    same = evidence.combine({"a": u[0], "b": u[0], "c": u[0]})
    assert (same > 0.95).mean() < 0.05 / 2


def test_score_end_to_end_benign_uniform_attacked_high_and_driver():
    rng = np.random.default_rng(2)
    cal = evidence.Calibration.fit({"x": rng.normal(size=20000), "y": rng.exponential(size=20000)})
    benign = cal.score({"x": rng.normal(size=5000), "y": rng.exponential(size=5000)})
    assert abs((benign.suspicion > 0.95).mean() - 0.05) < 0.01
    sc = cal.score({"x": np.array([0.0, 100.0, np.nan]), "y": np.array([100.0, 0.0, np.nan])})
    assert sc.driver == ["y", "x", None]
    # the driving measure is beyond every benign value: ((n + ½)/(n + 1))² with n = 20000
    np.testing.assert_allclose(sc.suspicion[:2], [(20000.5 / 20001) ** 2] * 2, rtol=1e-12)
    assert np.isnan(sc.suspicion[2])


# --------------------------------------------------------------------------- verdicts

def _scores(s):
    s = np.asarray(s, dtype=np.float64)
    return evidence.UnitScores(s, {"m": s}, {"m": s * 10}, [None if np.isnan(v) else "m" for v in s])


def _binom_tail(k, n, p):
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_layer_verdict_thresholds_by_hand():
    base = [0.5] * 20
    v = evidence.layer_verdict("relu3", _scores(base))
    assert (v.verdict, v.n_flagged, v.p_value, v.expected_flagged) == ("no sign", 0, 1.0, pytest.approx(1.0))
    three = [0.99, 0.98, 0.97] + [0.5] * 17
    v3 = evidence.layer_verdict("relu3", _scores(three))
    # P(Binomial(20, 0.05) ≥ 3) = 1 − 0.95^20 − 20·0.05·0.95^19 − 190·0.05²·0.95^18 ≈ 0.0755
    assert v3.p_units == pytest.approx(_binom_tail(3, 20, 0.05), rel=1e-9)
    assert v3.verdict == "no sign" and v3.n_flagged == 3
    loose = evidence.VerdictThresholds(suspicious_p=0.1)
    assert evidence.layer_verdict("relu3", _scores(three), thresholds=loose).verdict == "suspicious"
    v4 = evidence.layer_verdict("relu3", _scores([0.96] + three[:3] + [0.5] * 16))
    assert v4.p_value == pytest.approx(_binom_tail(4, 20, 0.05), rel=1e-9) and v4.verdict == "suspicious"   # ≈ 0.016
    vall = evidence.layer_verdict("relu3", _scores([0.99] * 20))
    assert vall.verdict == "manipulated" and vall.p_value == pytest.approx(0.05 ** 20, rel=1e-9)
    # evidence: most suspicious first, dead (NaN) units left out of the counts
    vn = evidence.layer_verdict("relu3", _scores([0.2, np.nan, 0.99, 0.7]), thresholds=evidence.VerdictThresholds(top_units=2))
    assert vn.n_units == 3 and [u["unit"] for u in vn.top_units] == [2, 3]
    assert vn.top_units[0]["driver"] == "m" and vn.top_units[0]["measures"]["m"] == {"value": 9.9, "suspicion": 0.99}
    two = evidence.UnitScores(np.array([0.9, 0.1]), {"m": np.array([0.9, 0.1]), "n": np.array([np.nan, 0.1])},
                       {"m": np.array([5.0, 1.0]), "n": np.array([np.nan, 1.0])}, ["m", "m"])
    assert evidence.layer_verdict("relu3", two).top_units[0]["measures"]["n"] == {"value": None, "suspicion": None}


def test_layer_verdict_layer_evidence_and_class():
    # no unit flagged, but the calibrated weight distance is extreme: p = Šidák(1, 1e-4) over 2 sources
    v = evidence.layer_verdict("relu3", _scores([0.5] * 20), layer_evidence={"weight_distance": 0.9999})
    assert v.p_value == pytest.approx(1 - (1 - 1e-4) ** 2, rel=1e-9) and v.verdict == "manipulated"
    pop4 = [[0.5, 0.5, 0.0], [0.3, 0.7, 0.0], [0.4, 0.6, 0.0], [0.45, 0.55, 0.0]]
    ev = evidence.class_share_evidence([0.2, 0.3, 0.5], pop4, n_units=100)
    # class 2: never a majority in 4 clean models, half the suspect's 100 units: t(3) of z/√1.25, Šidák over 3
    sd = math.sqrt((1 / 403) * (402 / 403) / 100)
    assert ev.p_value == pytest.approx(1 - stats.t.cdf(0.5 / sd / math.sqrt(1.25), df=3) ** 3, rel=1e-9)
    vc = evidence.layer_verdict("relu3", _scores([0.5] * 20), class_evidence=ev)
    assert vc.flagged_class == 2 and vc.layer_evidence["class_share"] == ev.suspicion and vc.verdict == "manipulated"
    with pytest.raises(ValueError, match="layer_evidence"):
        evidence.layer_verdict("relu3", _scores([0.5]), layer_evidence={"w": 1.5})
    with pytest.raises(ValueError, match="manipulated_p"):
        evidence.VerdictThresholds(suspicious_p=0.001, manipulated_p=0.01)
    with pytest.raises(ValueError, match="unit"):
        evidence.VerdictThresholds(unit=1.0)


def test_model_verdict_corrects_for_layers():
    a = evidence.Verdict("relu2", "suspicious", 0.01, 10, 2, 0.5, 0.01, top_units=[{"unit": 3}])
    b = evidence.Verdict("relu3", "no sign", 0.5, 10, 0, 0.5, 0.5)
    m = evidence.model_verdict([a, b])
    # 1 − (1 − 0.01)² = 0.0199 < 0.05; the layer that drove it supplies the evidence
    assert m.p_value == pytest.approx(0.0199, rel=1e-12) and m.verdict == "suspicious"
    assert m.top_units == [{"unit": 3, "layer": "relu2"}] and [v.name for v in m.layers] == ["relu2", "relu3"]
    assert m.to_dict()["layers"][1]["verdict"] == "no sign"
    assert evidence.model_verdict([evidence.Verdict("x", "suspicious", 0.03, 1, 1, 0.05, 0.03)] * 2).verdict == "no sign"
    with pytest.raises(ValueError, match="layers"):
        evidence.model_verdict([])


# --------------------------------------------------------------------------- ROC AUC

def test_unit_auroc_by_hand_and_against_scipy():
    # pairs (pos, neg): 3>1, 3>2, 2>1, 2=2 (half) → 3.5 / 4
    assert evidence.unit_auroc([3, 2, 1, 2], [1, 1, 0, 0]) == 0.875
    assert evidence.unit_auroc([1, 2], [True, False]) == 0.0
    rng = np.random.default_rng(3)
    for n in (7, 50, 301):
        x = rng.integers(0, 6, size=n).astype(float)       # many ties
        y = rng.uniform(size=n) < 0.3
        y[0], y[1] = True, False
        u = stats.mannwhitneyu(x[y], x[~y]).statistic
        assert evidence.unit_auroc(x, y) == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)
    with pytest.raises(ValueError, match="both positives and negatives"):
        evidence.unit_auroc([1, 2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evidence.unit_auroc([1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="labels"):
        evidence.unit_auroc([1, 2], [1, 0, 1])


def test_population_class_evidence_is_leave_one_out():
    m0 = np.array([[0, 1, 2], [2, 3, 4]])            # majorities 0, 1 → shares (½, ½, 0)
    m1 = np.array([[4, 5, 0], [0, 1, 4]])            # majorities 2, 0 → shares (½, 0, ½)
    vals = evidence.population_class_evidence([m0, m1], LABELS, 3)
    # model 0 against model 1 alone (and the reverse), exactly as a suspect would be
    ev0 = evidence.class_share_evidence([0.5, 0.5, 0.0], [[0.5, 0.0, 0.5]], n_units=2)
    ev1 = evidence.class_share_evidence([0.5, 0.0, 0.5], [[0.5, 0.5, 0.0]], n_units=2)
    want = np.concatenate([evidence.unit_class_evidence(m0, LABELS, ev0), evidence.unit_class_evidence(m1, LABELS, ev1)])
    np.testing.assert_array_equal(vals, want)
    # by hand for model 0: J = 2, p̃ = (share·2 + 1)/(2 + 3) = (2/5, 1/5, 2/5); class 1 gained ½ with
    # sd sqrt((1/5)(4/5)/2) = sqrt(0.08) → z_1 = 0.5/sqrt(0.08); class 0 z = 0, class 2 negative.
    # unit 0 holds one class-1 image of three, unit 1 two.
    z1 = 0.5 / math.sqrt(0.08)
    np.testing.assert_allclose(vals[:2], [z1 / 3, 2 * z1 / 3], rtol=1e-12)
    dead = evidence.population_class_evidence([m0, m1], LABELS, 3, dead_units=[[1], None])
    assert np.isnan(dead[1]) and not np.isnan(dead[[0, 2, 3]]).any()
    with pytest.raises(ValueError, match="at least 2 clean models"):
        evidence.population_class_evidence([m0], LABELS, 3)
