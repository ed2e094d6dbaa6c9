"""SPEC §3 metrics: hand-checked examples, agreement with scipy, input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from fvaudit.engine import measure


def scipy_tau(x, y) -> float:
    return float(kendalltau(x, y).statistic)


def scipy_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference: the plain scipy double loop over column pairs."""
    return np.array([[scipy_tau(a[:, j], b[:, i]) for i in range(b.shape[1])] for j in range(a.shape[1])])


def assert_same_with_nan(got, want, atol=1e-9):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=atol)


def tie_heavy(rng, n, j, kind):
    """Score matrices like real ones: many exact ties (zeros, small integers)."""
    if kind == "relu":
        return np.maximum(rng.standard_normal((n, j)), 0)
    if kind == "ints":
        return rng.integers(0, 4, (n, j)).astype(float)
    if kind == "coarse":
        return np.round(rng.standard_normal((n, j)), 1)
    if kind == "negmin":      # the largest tie group is a negative minimum, plus a tied maximum
        z = np.where(rng.random((n, j)) < 0.5, -2.0, rng.standard_normal((n, j)))
        return np.minimum(z, 1.0)
    raise AssertionError(kind)


# ------------------------------------------------------------------ Kendall: worked examples

def test_tau_b_worked_examples_by_hand():
    # x = 1 2 3 4, y = 1 3 2 4: of the 6 pairs only (2nd, 3rd) is discordant:
    #   tau = (5 - 1) / 6 = 2/3
    # x = 1 1 2 3, y = 1 2 2 3: concordant 4, discordant 0, one pair tied in x only,
    #   one tied in y only: tau_b = 4 / sqrt((6-1)(6-1)) = 0.8
    # x = 0 0 0 1 2, y = 0 0 1 0 2 (ReLU-like zeros): n0 = 10 pairs, x ties n1 = 3,
    #   y ties n2 = 3, joint tie n3 = 1 (images 1,2), discordant (3,4) = 1, concordant 4:
    #   tau_b = (4 - 1) / sqrt(7 * 7) = 3/7
    r_init = np.array([[1, 1, 0], [2, 1, 0], [3, 2, 0], [4, 3, 1], [5, 4, 2]], dtype=float)
    r_final = np.array([[1, 1, 0], [3, 2, 0], [2, 2, 1], [4, 3, 0], [5, 4, 2]], dtype=float)
    # columns 0 and 1 use the first 4 images only in the comments; with the 5th image,
    # which is the largest in both, they gain 4 concordant pairs:
    #   col 0: (9 - 1) / 10 = 0.8 ; col 1: n0 = 10, n1 = 1, n2 = 1 -> 8 / 9
    got = measure.kendall_tau(r_init, r_final)
    np.testing.assert_allclose(got, [0.8, 8 / 9, 3 / 7], rtol=0, atol=1e-12)
    np.testing.assert_allclose(measure.kendall_tau(r_init[:4, :2], r_final[:4, :2]), [2 / 3, 0.8], atol=1e-12)


def test_constant_column_is_nan_like_scipy():
    r_init = np.array([[0, 1], [0, 2], [0, 3]], dtype=float)       # unit 0 silent on all images
    r_final = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    got = measure.kendall_tau(r_init, r_final)
    assert math.isnan(scipy_tau(r_init[:, 0], r_final[:, 0]))
    assert math.isnan(got[0])
    assert got[1] == pytest.approx(-1.0)
    # a NaN score propagates as in scipy's default nan_policy
    r_nan = r_init.copy()
    r_nan[1, 1] = np.nan
    assert math.isnan(measure.kendall_tau(r_nan, r_final)[1])
    # a single image: no pairs, undefined
    assert np.isnan(measure.kendall_tau(r_init[:1], r_final[:1])).all()


def test_tau_matrix_symmetric_diagonal_and_nan():
    a = np.array([[1, 0, 5], [2, 0, 4], [3, 0, 4], [4, 0, 1]], dtype=float)
    m = measure.kendall_tau_matrix(a)
    assert m[0, 0] == pytest.approx(1.0, abs=1e-15) and m[2, 2] == pytest.approx(1.0, abs=1e-15)
    assert m[2, 2] == scipy_tau(a[:, 2], a[:, 2])
    assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all()
    # symmetric up to rounding (scipy itself divides by the x then the y term)
    np.testing.assert_allclose(m, m.T, rtol=0, atol=1e-15)
    # x = 1 2 3 4 vs y = 5 4 4 1: 5 discordant pairs, 1 tied in y -> -5 / sqrt(6 * 5)
    assert m[0, 2] == pytest.approx(-5 / math.sqrt(30), abs=1e-12)


def test_tau_w_worked_example_by_hand():
    # init units:  u0 = 1 2 3 4, u1 = 1 3 2 4, u2 = 4 3 2 1
    # final units: f0 = 4 3 2 1, f1 = 1 2 3 4, f2 = 1 2 4 3
    # tau(u0,u1) = 2/3, tau(u0,u2) = -1, tau(u1,u2) = -2/3
    # tau(u0,f1) = 1, tau(u0,f2) = 2/3 ; tau(u1,f0) = -2/3, tau(u1,f2) = 1/3 ;
    # tau(u2,f0) = 1, tau(u2,f1) = -1
    # tau-W_0 = max(1, 2/3) / max(2/3, -1)          = 1.5
    # tau-W_1 = max(-2/3, 1/3) / max(2/3, -2/3)     = 0.5
    # tau-W_2 = max(1, -1) / max(-1, -2/3)          = -1.5
    init = np.array([[1, 1, 4], [2, 3, 3], [3, 2, 2], [4, 4, 1]], dtype=float)
    final = np.array([[4, 1, 1], [3, 2, 2], [2, 3, 4], [1, 4, 3]], dtype=float)
    np.testing.assert_allclose(measure.kendall_tau_w(init, final), [1.5, 0.5, -1.5], rtol=0, atol=1e-12)
    cross = measure.kendall_tau_matrix(init, final)
    np.testing.assert_allclose(cross[1], [-2 / 3, 2 / 3, 1 / 3], atol=1e-12)


def test_tau_w_unchanged_model_is_one_and_nan_rules():
    rng = np.random.default_rng(3)
    a = tie_heavy(rng, 60, 5, "relu")
    np.testing.assert_allclose(measure.kendall_tau_w(a, a.copy()), np.ones(5), atol=1e-12)
    # a silent unit: its own tau-W is NaN, and it is skipped (nanmax) for the others
    a[:, 4] = 0.0
    b = a + 0.01 * rng.standard_normal(a.shape)
    b[:, 4] = 0.0
    w = measure.kendall_tau_w(a, b)
    assert np.isnan(w[4]) and np.isfinite(w[:4]).all()
    ref_cross, ref_init = scipy_matrix(a, b), scipy_matrix(a, a)
    for j in range(4):
        others = [i for i in range(5) if i != j]
        want = np.nanmax(ref_cross[j, others]) / np.nanmax(ref_init[j, others])
        assert w[j] == pytest.approx(want, abs=1e-9)


# ------------------------------------------------------------------ Kendall: against scipy

@pytest.mark.parametrize("kind", ["relu", "ints", "coarse", "negmin"])
@pytest.mark.parametrize("n", [2, 3, 5, 7, 8, 33, 130])
def test_tau_matrix_matches_scipy_double_loop(kind, n):
    rng = np.random.default_rng(n * 7 + len(kind))
    a = tie_heavy(rng, n, 4, kind)
    b = tie_heavy(rng, n, 5, kind)
    a[:, 1] = 0.0          # silent unit -> NaN row
    b[:, 3] = 0.0          # silent unit -> NaN column
    assert_same_with_nan(measure.kendall_tau_matrix(a, b), scipy_matrix(a, b))
    assert_same_with_nan(measure.kendall_tau_matrix(a), scipy_matrix(a, a))
    assert_same_with_nan(measure.kendall_tau(a, b[:, :4]), np.diagonal(scipy_matrix(a, b[:, :4])))


def test_tau_matches_scipy_on_larger_relu_scores_and_threads_agree():
    rng = np.random.default_rng(11)
    a = tie_heavy(rng, 1500, 6, "relu").astype(np.float32)
    b = np.maximum(a + 0.3 * rng.standard_normal(a.shape).astype(np.float32), 0)
    m1 = measure.kendall_tau_matrix(a, b, n_jobs=1)
    m2 = measure.kendall_tau_matrix(a, b, n_jobs=2)
    np.testing.assert_array_equal(m1, m2)
    assert_same_with_nan(m1, scipy_matrix(a, b))
    assert_same_with_nan(measure.kendall_tau(a, b), np.diagonal(scipy_matrix(a, b)))
    # many distinct tie groups in x (integers 0..40) exercise the general joint-tie path
    c = rng.integers(0, 40, (1500, 3)).astype(float)
    d = rng.integers(0, 3, (1500, 3)).astype(float)
    assert_same_with_nan(measure.kendall_tau_matrix(c, d), scipy_matrix(c, d))
    assert_same_with_nan(measure.kendall_tau_matrix(d, c), scipy_matrix(d, c))


def test_tau_matches_scipy_beyond_16_bit_ranks():
    # N > 16383: the inversion count switches from 16-bit to 32-bit sort keys
    rng = np.random.default_rng(12)
    a = tie_heavy(rng, 17000, 2, "relu")
    b = np.round(a[:, ::-1] + rng.standard_normal(a.shape), 2)
    assert_same_with_nan(measure.kendall_tau_matrix(a, b), scipy_matrix(a, b))
    assert_same_with_nan(measure.kendall_tau(a, b), np.diagonal(scipy_matrix(a, b)))


def test_tau_w_matches_scipy_reference():
    rng = np.random.default_rng(5)
    a = tie_heavy(rng, 200, 6, "relu")
    b = np.maximum(a[:, ::-1] + 0.5 * rng.standard_normal(a.shape), 0)   # units swap rankings
    ref_cross, ref_init = scipy_matrix(a, b), scipy_matrix(a, a)
    off = ~np.eye(6, dtype=bool)
    want = [np.nanmax(ref_cross[j][off[j]]) / np.nanmax(ref_init[j][off[j]]) for j in range(6)]
    np.testing.assert_allclose(measure.kendall_tau_w(a, b), want, rtol=0, atol=1e-9)
    # precomputed matrices give the same answer without recomputing
    got = measure.kendall_tau_w(a, b, tau_init=ref_init, tau_cross=ref_cross)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_symmetric_and_general_paths_agree():
    rng = np.random.default_rng(8)
    a = rng.integers(0, 6, (90, 5)).astype(np.float64)
    # a float32 copy has equal values but another dtype: the general (non-symmetric) path
    np.testing.assert_array_equal(measure.kendall_tau_matrix(a), measure.kendall_tau_matrix(a, a.astype(np.float32)))


# ------------------------------------------------------------------ CLIP metrics

def _two_unit_example():
    # init:  S_0 = {(1,0), (0,1)} (mean (.5,.5)),  S_1 = {(1,0), (1,0)} (mean (1,0))
    # final: S'_0 = {(3,0), (0,4)} -> normalised {(1,0),(0,1)} = S_0,  S'_1 = {(0,1), (0,1)}
    init = np.array([[[1, 0], [0, 1]], [[1, 0], [1, 0]]], dtype=float)
    final = np.array([[[3, 0], [0, 4]], [[0, 1], [0, 1]]], dtype=float)
    return init, final


def test_set_similarity_by_hand():
    init, final = _two_unit_example()
    # C(S_0,S_0): pairs (1,0)(1,0)=1, (1,0)(0,1)=0, (0,1)(1,0)=0, (0,1)(0,1)=1 -> 0.5
    # C(S_0,S_1) = 0.5, C(S_1,S_1) = 1; C(S_1,S'_1) = 0; C(S_0,S'_1) = 0.5
    np.testing.assert_allclose(measure.set_similarity(init, init), [[0.5, 0.5], [0.5, 1.0]], atol=1e-15)
    np.testing.assert_allclose(measure.set_similarity(init, final), [[0.5, 0.5], [0.5, 0.0]], atol=1e-15)


def test_set_similarity_is_mean_pairwise_cosine():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 4, 6)) * rng.uniform(0.5, 3, (3, 4, 1))    # not normalised
    b = rng.standard_normal((2, 5, 6))
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    want = [[np.mean([cos(x, y) for x in a[j] for y in b[p]]) for p in range(2)] for j in range(3)]
    np.testing.assert_allclose(measure.set_similarity(a, b), want, atol=1e-12)


def test_clip_delta_and_clip_w_by_hand():
    init, final = _two_unit_example()
    # CLIP-δ_0 = (C^ii_00 − C^if_00) / C^ii_01 = (0.5 − 0.5) / 0.5 = 0 (same set after normalising)
    # CLIP-δ_1 = (C^ii_11 − C^if_11) / C^ii_10 = (1 − 0) / 0.5 = 2
    delta = measure.clip_delta(init, final)
    assert delta[0] == 0.0
    assert delta[1] == pytest.approx(2.0, abs=1e-12)
    # CLIP-W_0 = C^if_01 / C^ii_01 = 0.5 / 0.5 = 1 ; CLIP-W_1 = C^if_10 / C^ii_10 = 0.5 / 0.5 = 1
    np.testing.assert_allclose(measure.clip_w(init, final), [1.0, 1.0], atol=1e-12)
    # final2: S'_0 = {(0,1),(0,1)}, S'_1 = {(1,0),(1,0)}
    #   CLIP-W_0 = C(S_0, S'_1) / C^ii_01 = 0.5 / 0.5 = 1 ; CLIP-W_1 = C(S_1, S'_0) / 0.5 = 0 / 0.5 = 0
    #   CLIP-δ_0 = (0.5 − C(S_0, S'_0) = 0.5) / 0.5 = 0 ; CLIP-δ_1 = (1 − C(S_1, S'_1) = 1) / 0.5 = 0
    final2 = np.array([[[0, 1], [0, 1]], [[1, 0], [1, 0]]], dtype=float)
    np.testing.assert_allclose(measure.clip_w(init, final2), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(measure.clip_delta(init, final2), [0.0, 0.0], atol=1e-12)


def test_clip_metrics_three_units_by_hand():
    # k = 1: a set similarity is the cosine of the two images.
    # init u0 = (1,0), u1 = (0,1), u2 = (1,1)/√2 (given unnormalised as (2,2));
    # final f0 = (0,1), f1 = (1,0), f2 = (1,0).
    # C^ii off-diagonal: u0·u1 = 0, u0·u2 = u1·u2 = 1/√2
    # CLIP-W_0 = max(u0·f1, u0·f2) / max(u0·u1, u0·u2) = 1 / (1/√2) = √2
    # CLIP-W_1 = max(u1·f0, u1·f2) / max(u1·u0, u1·u2) = 1 / (1/√2) = √2
    # CLIP-W_2 = max(u2·f0, u2·f1) / max(u2·u0, u2·u1) = (1/√2) / (1/√2) = 1
    # CLIP-δ_0 = (u0·u0 − u0·f0) / ((u0·u1 + u0·u2) / 2) = (1 − 0) / (1/(2√2)) = 2√2
    # CLIP-δ_2 = (1 − u2·f2) / ((1/√2 + 1/√2) / 2) = (1 − 1/√2) · √2 = √2 − 1
    init = np.array([[[1, 0]], [[0, 1]], [[2, 2]]], dtype=float)
    final = np.array([[[0, 1]], [[1, 0]], [[1, 0]]], dtype=float)
    r2 = math.sqrt(2)
    np.testing.assert_allclose(measure.clip_w(init, final), [r2, r2, 1.0], atol=1e-12)
    np.testing.assert_allclose(measure.clip_delta(init, final), [2 * r2, 2 * r2, r2 - 1], atol=1e-12)


def test_clip_delta_exactly_zero_for_unchanged_sets_in_any_order():
    rng = np.random.default_rng(4)
    e = rng.standard_normal((8, 5, 32)).astype(np.float32)
    e /= np.linalg.norm(e, axis=2, keepdims=True)
    shuffled = e[:, rng.permutation(5)]
    assert np.all(measure.clip_delta(e, shuffled) == 0.0)
    np.testing.assert_allclose(measure.clip_w(e, shuffled), np.ones(8), atol=1e-12)
    moved = e.copy()
    moved[3] = rng.standard_normal((5, 32))
    d = measure.clip_delta(e, moved)
    assert d[3] != 0.0 and np.all(np.delete(d, 3) == 0.0)


# ------------------------------------------------------------------ other metrics

def test_topk_overlap():
    got = measure.topk_overlap(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 10]]))
    np.testing.assert_allclose(got, [2 / 3, 0.0])


def test_accuracy_from_logits_and_labels():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([1, 1, 1])
    assert measure.accuracy(logits, labels) == pytest.approx(200 / 3)
    assert measure.accuracy(np.array([1, 0, 1]), labels) == pytest.approx(200 / 3)
    assert measure.accuracy(np.array([1, 1, 1]), labels) == 100.0


def test_nan_aggregate_counts():
    assert measure.nan_aggregate(np.array([1.0, np.nan, 3.0, np.nan])) == {"mean": 2.0, "n": 2, "n_nan": 2}
    r = measure.nan_aggregate([np.nan, np.nan])
    assert math.isnan(r["mean"]) and r["n"] == 0 and r["n_nan"] == 2
    r = measure.nan_aggregate([])
    assert math.isnan(r["mean"]) and r["n"] == 0 and r["n_nan"] == 0
    assert measure.nan_aggregate([0.5, None, 1.5]) == {"mean": 1.0, "n": 2, "n_nan": 1}


def test_pushup_success():
    labels = np.array([0, 1, 2, 2, 1, 0, 2])
    topk = np.array([[2, 3, 0], [0, 1, 5], [6, 1, 4]])      # labels [2 2 0], [0 1 0], [2 1 1]
    r = measure.pushup_success(topk, labels, decoy_class=2, decoy_ids=[3])
    assert r["share_units_with_decoy_class"] == pytest.approx(2 / 3)
    assert r["mean_decoy_class_share"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert r["share_units_with_decoy_images"] == pytest.approx(1 / 3)
    r = measure.pushup_success(topk, labels, decoy_class=2)
    assert r["share_units_with_decoy_images"] is None
    r = measure.pushup_success(topk[1:2], labels, decoy_class=2, decoy_ids=np.array([], dtype=int))
    assert r["share_units_with_decoy_class"] == 0.0 and math.isnan(r["mean_decoy_class_share"])
    assert r["share_units_with_decoy_images"] == 0.0


# ------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("call, match", [
    (lambda: measure.kendall_tau(np.zeros((4, 2)), np.zeros((4, 3))), "shapes differ"),
    (lambda: measure.kendall_tau(np.zeros(4), np.zeros(4)), "r_init.*2-D"),
    (lambda: measure.kendall_tau(np.zeros((0, 2)), np.zeros((0, 2))), "r_init.*no rows"),
    (lambda: measure.kendall_tau(np.array([["a"]]), np.array([["b"]])), "r_init.*real numbers"),
    (lambda: measure.kendall_tau_matrix(np.zeros((4, 2)), np.zeros((5, 2))), "rows"),
    (lambda: measure.kendall_tau_w(np.arange(4.0)[:, None], np.arange(4.0)[:, None]), "J ≥ 2"),
    (lambda: measure.kendall_tau_w(np.zeros((4, 2)), np.zeros((4, 2)), tau_init=np.zeros((3, 3))), "tau_init"),
    (lambda: measure.kendall_tau_matrix(np.zeros((4, 2)), n_jobs=0), "n_jobs"),
    (lambda: measure.set_similarity(np.ones((2, 3)), np.ones((2, 3, 4))), "emb_a.*J units, k images"),
    (lambda: measure.set_similarity(np.ones((2, 3, 4)), np.ones((2, 3, 5))), "embedding size"),
    (lambda: measure.set_similarity(np.zeros((2, 3, 4)), np.ones((2, 3, 4))), "emb_a.*all-zero"),
    (lambda: measure.clip_delta(np.ones((1, 3, 4)), np.ones((1, 3, 4))), "J ≥ 2"),
    (lambda: measure.clip_w(np.ones((2, 3, 4)), np.ones((3, 3, 4))), "units"),
    (lambda: measure.topk_overlap(np.zeros((2, 3), int), np.zeros((2, 4), int)), "shapes differ"),
    (lambda: measure.topk_overlap(np.zeros((2, 3)), np.zeros((2, 3))), "integer"),
    (lambda: measure.topk_overlap(np.array([[1, 1]]), np.array([[1, 2]])), "repeats"),
    (lambda: measure.accuracy(np.zeros((0, 3)), np.zeros(0, int)), "empty"),
    (lambda: measure.accuracy(np.zeros((4, 3)), np.zeros(3, int)), "4 rows.*3"),
    (lambda: measure.accuracy(np.zeros((2, 2, 2)), np.zeros(2, int)), "logits_or_preds"),
    (lambda: measure.pushup_success(np.array([[0, 9]]), np.zeros(5, int), 1), "topk_ids.*\\[0, 5\\)"),
    (lambda: measure.pushup_success(np.array([0, 1]), np.zeros(5, int), 1), "topk_ids.*J units"),
])
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
