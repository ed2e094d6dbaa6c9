"""Kendall-τ-W by bound-and-prune (SPEC §3; fvaudit.engine.measure.kendall): the bound is an
upper bound (by hand and as a property), and the pruned row maxima / top-k equal scipy's
kendalltau to 1e-12 and kendall_tau_matrix bit for bit, ties, NaN and constant columns
included."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau

from fvaudit.engine.measure import kendall
from fvaudit.engine import measure
from fvaudit.engine.measure.report import measure_layer


def scipy_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[kendalltau(a[:, j], b[:, i]).statistic for i in range(b.shape[1])]
                     for j in range(a.shape[1])], dtype=float)


def reference_top(mat: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Row top-k of a τ matrix over i ≠ j, NaN skipped, equal values by column index."""
    idx, val = [], []
    for j in range(mat.shape[0]):
        row = mat[j].astype(float).copy()
        row[j] = np.nan
        row = np.where(np.isnan(row), -np.inf, row)
        order = [int(i) for i in np.argsort(-row, kind="stable")[:k] if np.isfinite(row[i])]
        idx.append(order)
        val.append([float(row[i]) for i in order])
    return idx, val


def assert_top_equals(top: kendall.RowTop, mat: np.ndarray, k: int, exact_bits: bool = True) -> None:
    idx, val = reference_top(mat, k)
    for j in range(mat.shape[0]):
        m = len(idx[j])
        assert top.index[j, :m].tolist() == idx[j], (j, top.index[j], idx[j])
        if exact_bits:
            assert top.value[j, :m].tolist() == val[j]
        else:
            np.testing.assert_allclose(top.value[j, :m], val[j], rtol=0, atol=1e-12)
        assert (top.index[j, m:] == -1).all() and np.isnan(top.value[j, m:]).all()


def tie_heavy(rng, n, j, kind):
    if kind == "relu":
        return np.maximum(rng.standard_normal((n, j)), 0)
    if kind == "ints":                      # few distinct values: one bucket per value
        return rng.integers(0, 4, (n, j)).astype(float)
    if kind == "many_ints":                 # more distinct values than buckets, big tie groups
        return rng.integers(0, 40, (n, j)).astype(float)
    if kind == "coarse":
        return np.round(rng.standard_normal((n, j)), 1)
    if kind == "negmin":
        z = np.where(rng.random((n, j)) < 0.5, -2.0, rng.standard_normal((n, j)))
        return np.minimum(z, 1.0)
    raise AssertionError(kind)


def correlated(rng, n, j, kind):
    """Units sharing a latent factor (so rows have clear maxima to prune towards)."""
    base = tie_heavy(rng, n, 1, kind)
    return np.where(rng.random((n, j)) < 0.7, base, tie_heavy(rng, n, j, kind))


# ------------------------------------------------------------------ the bound, by hand

def test_bound_by_hand_tight_and_loose():
    # n_buckets = 2 cuts 4 distinct values into halves: x = 1 2 3 4 -> buckets 0 0 1 1.
    # y = 1 3 2 4 -> buckets 0 1 0 1: one image per cell. Pairs outside Q (sharing no
    # bucket): (img0, img3) concordant, (img1, img2) discordant -> S_b = 0; Q holds the
    # other 4 pairs, none tied: S <= 0 + 4 -> bound 4/6 = 2/3 = tau (5 conc, 1 disc).
    # y = 2 1 4 3 -> buckets 0 0 1 1 = x's: cells (0,0) and (1,1) hold 2 images each.
    # Outside Q: the 4 pairs across the cells, all concordant -> S_b = 4; Q: the 2 pairs
    # inside a cell -> S <= 6 -> bound 1, while tau = (4 - 2)/6 = 1/3.
    x = np.array([1.0, 2, 3, 4])[:, None]
    y = np.array([[1.0, 2], [3, 1], [2, 4], [4, 3]])
    ub = kendall.tau_upper_bound(x, y, n_buckets=2)
    np.testing.assert_allclose(ub, [[2 / 3, 1.0]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(measure.kendall_tau_matrix(x, y), [[2 / 3, 1 / 3]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(kendall.tau_upper_bound(x, y, n_buckets=2, fine=True), ub)


def test_bound_is_exact_when_columns_have_few_values():
    # at most n_buckets distinct values: one bucket per value, every pair in Q is tied,
    # so the bound is tau itself (bit for bit: same integer, same operations)
    rng = np.random.default_rng(2)
    a = rng.integers(0, 5, (300, 6)).astype(float)
    b = rng.integers(0, 3, (300, 7)).astype(float)
    np.testing.assert_array_equal(kendall.tau_upper_bound(a, b, n_buckets=5), measure.kendall_tau_matrix(a, b))
    np.testing.assert_array_equal(kendall.tau_upper_bound(a, b, n_buckets=5, fine=True), measure.kendall_tau_matrix(a, b))


def _score_arrays(values):
    return st.integers(2, 40).flatmap(lambda n: st.tuples(
        st.lists(st.lists(values, min_size=4, max_size=4), min_size=n, max_size=n),
        st.lists(st.lists(values, min_size=3, max_size=3), min_size=n, max_size=n)))


_values = st.one_of(st.integers(-3, 3).map(float), st.sampled_from([0.0, 0.0, 0.0, 1.5, -0.0, np.nan]),
                    st.floats(-10, 10, allow_nan=False, width=32))


@settings(max_examples=150, deadline=None)
@given(_score_arrays(_values), st.sampled_from([2, 3, 5, 16, 64]))
def test_bound_is_an_upper_bound_property(data, n_buckets):
    a, b = (np.array(x, dtype=np.float64) for x in data)
    exact = measure.kendall_tau_matrix(a, b)
    for fine in (False, True):
        ub = kendall.tau_upper_bound(a, b, n_buckets=n_buckets, fine=fine)
        np.testing.assert_array_equal(np.isnan(ub), np.isnan(exact))
        ok = ~np.isnan(exact)
        assert (ub[ok] >= exact[ok]).all()
    same = measure.kendall_tau_matrix(a)
    ub = kendall.tau_upper_bound(a, n_buckets=n_buckets)
    ok = ~np.isnan(same)
    assert (ub[ok] >= same[ok]).all()


@settings(max_examples=60, deadline=None)
@given(_score_arrays(_values), st.integers(1, 3))
def test_row_top_equals_matrix_property(data, k):
    a, b = (np.array(x, dtype=np.float64) for x in data)
    b = np.concatenate([b, a[:, :1]], axis=1)              # 4 columns, one a copy of a's first
    assert_top_equals(kendall.kendall_row_top(a, b, k=k), measure.kendall_tau_matrix(a, b), k)
    assert_top_equals(kendall.kendall_row_top(a, k=k), measure.kendall_tau_matrix(a), k)


# ------------------------------------------------------------------ pruned maxima against scipy

@pytest.mark.parametrize("kind", ["relu", "ints", "many_ints", "coarse", "negmin"])
@pytest.mark.parametrize("n", [2, 3, 5, 9, 64, 700])
def test_row_top_and_tau_w_match_scipy_on_tie_heavy_scores(kind, n):
    rng = np.random.default_rng(n * 13 + len(kind))
    a = correlated(rng, n, 7, kind)
    b = correlated(rng, n, 7, kind)
    a[:, 2] = 0.0                       # silent unit: NaN row and column
    b[:, 4] = 3.0                       # constant after the attack: NaN column
    ref_cross, ref_init = scipy_matrix(a, b), scipy_matrix(a, a)
    for k in (1, 3):
        cross = kendall.kendall_row_top(a, b, k=k)
        same = kendall.kendall_row_top(a, k=k)
        assert_top_equals(cross, ref_cross, k, exact_bits=False)
        assert_top_equals(same, ref_init, k, exact_bits=False)
        assert_top_equals(cross, measure.kendall_tau_matrix(a, b), k)
        assert_top_equals(same, measure.kendall_tau_matrix(a), k)
    off = ~np.eye(7, dtype=bool)
    want = []
    for j in range(7):
        num, den = ref_cross[j][off[j]], ref_init[j][off[j]]
        undefined = np.isnan(num).all() or np.isnan(den).all() or np.nanmax(den) == 0   # SPEC §3: NaN
        want.append(np.nan if undefined else np.nanmax(num) / np.nanmax(den))
    got = measure.kendall_tau_w(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(got)
    np.testing.assert_allclose(got[ok], np.array(want)[ok], rtol=0, atol=1e-12)
    # the full-matrix path gives the same bits
    full = measure.kendall_tau_w(a, b, tau_init=measure.kendall_tau_matrix(a), tau_cross=measure.kendall_tau_matrix(a, b))
    np.testing.assert_array_equal(got, full)
    assert np.isnan(got[2])


def test_nan_scores_single_image_and_all_undefined():
    rng = np.random.default_rng(4)
    a = np.maximum(rng.standard_normal((40, 4)), 0)
    b = a + 0.1 * rng.standard_normal(a.shape)
    b[7, 1] = np.nan                    # NaN propagates (scipy's default): column 1 of b undefined
    ref = scipy_matrix(a, b)
    assert np.isnan(ref[:, 1]).all()
    assert_top_equals(kendall.kendall_row_top(a, b, k=2), ref, 2, exact_bits=False)
    # one image: no pairs, every tau undefined
    top = kendall.kendall_row_top(a[:1], b[:1], k=2)
    assert (top.index == -1).all() and np.isnan(top.value).all()
    assert np.isnan(measure.kendall_tau_w(a[:1], b[:1])).all()
    # every column constant: nothing defined
    assert np.isnan(measure.kendall_tau_w(np.ones((5, 3)), np.ones((5, 3)))).all()


def test_equal_values_are_ordered_by_column_and_bounds_meet_the_threshold():
    # b holds three exact copies of a's column 0 and one of column 1: rows see equal
    # maxima (bound = threshold = tau), ordered by the smaller column; the copy at the
    # diagonal position is excluded
    rng = np.random.default_rng(6)
    a = tie_heavy(rng, 500, 4, "relu")
    b = np.stack([a[:, 0], a[:, 0], a[:, 1], a[:, 0]], axis=1)
    top = kendall.kendall_row_top(a, b, k=3)
    assert top.index[0].tolist() == [1, 3, 2]
    assert top.value[0, 0] == top.value[0, 1] == measure.kendall_tau_matrix(a[:, :1], a[:, :1])[0, 0]
    assert top.index[1].tolist() == [2, 0, 3]        # its own copy, then the two equal copies of a_0
    assert top.value[1, 1] == top.value[1, 2]
    assert_top_equals(top, measure.kendall_tau_matrix(a, b), 3)


def test_n_beyond_int32_tables_and_16_bit_ranks():
    rng = np.random.default_rng(9)
    a = tie_heavy(rng, 47_000, 3, "relu")
    b = np.round(a[:, ::-1] + 0.3 * rng.standard_normal(a.shape), 2)
    ref = scipy_matrix(a, b)
    assert_top_equals(kendall.kendall_row_top(a, b, k=2), ref, 2, exact_bits=False)
    assert (kendall.tau_upper_bound(a, b) >= measure.kendall_tau_matrix(a, b)).all()


def test_pruning_skips_most_pairs_and_threads_agree():
    # 40 units in 4 groups sharing a latent score: each row's best is in its group, and
    # the bounds rule out the other groups without an exact tau
    rng = np.random.default_rng(10)
    latent = rng.standard_normal((3000, 4))
    pre = np.repeat(latent, 10, axis=1) + 0.6 * rng.standard_normal((3000, 40))
    a = np.maximum(pre, 0).astype(np.float32)
    b = np.maximum(pre + 0.3 * rng.standard_normal(pre.shape), 0).astype(np.float32)
    one = kendall.kendall_row_top(a, b, n_jobs=1)
    two = kendall.kendall_row_top(a, b, n_jobs=2)
    np.testing.assert_array_equal(one.index, two.index)
    np.testing.assert_array_equal(one.value, two.value)
    assert one.eligible_pairs == 40 * 39
    assert one.exact_pairs < one.eligible_pairs // 4
    assert one.fine_pairs < one.eligible_pairs // 2
    assert_top_equals(one, measure.kendall_tau_matrix(a, b), 1)


def test_report_nearest_and_tau_w_equal_the_matrix_path():
    rng = np.random.default_rng(12)
    a = tie_heavy(rng, 400, 8, "relu")
    b = np.maximum(a[:, ::-1] + 0.4 * rng.standard_normal(a.shape), 0)
    a[:, 5] = 0.0                                   # dead unit, left out of the live units
    lm = measure_layer("l", a, b, attacked=[0, 1, 2])
    units = lm.units
    assert 5 not in units
    A, B = a[:, units], b[:, units]
    for key, mat in (("by_tau_init", measure.kendall_tau_matrix(A)), ("by_tau_final", measure.kendall_tau_matrix(A, B))):
        idx, val = reference_top(mat, 3)
        for c, u in enumerate(units):
            assert [(d["unit"], d["value"]) for d in lm.nearest[u][key]] == \
                [(units[i], v) for i, v in zip(idx[c], val[c])]
    want = measure.kendall_tau_w(A, B, tau_init=measure.kendall_tau_matrix(A), tau_cross=measure.kendall_tau_matrix(A, B))
    assert [lm.per_unit["kendall_tau_w"][u] for u in units] == want.tolist()


@pytest.mark.parametrize("call, field", [
    (lambda: kendall.kendall_row_top(np.zeros((4, 2)), k=0), "k"),
    (lambda: kendall.kendall_row_top(np.zeros((4, 2)), np.zeros((4, 3))), "exclude_diagonal"),
    (lambda: kendall.kendall_row_top(np.zeros((4, 2)), np.zeros((5, 2))), "rows"),
    (lambda: kendall.kendall_w_maxima(np.zeros((4, 2)), np.zeros((4, 3))), "shapes differ"),
    (lambda: kendall.tau_upper_bound(np.zeros((4, 2)), n_buckets=1), "n_buckets"),
])
def test_bad_input_names_the_argument(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_row_top_max_property_is_nan_for_empty_rows():
    top = kendall.kendall_row_top(np.array([[0.0, 1], [0, 2], [0, 3]]))
    assert math.isnan(top.max[0]) and math.isnan(top.max[1])    # column 0 constant: nothing defined


def test_blocked_products_give_the_same_bounds(monkeypatch):
    # small memory budgets: 5 columns of one-hot indicators per block, row blocks of 3
    # units, the symmetric path skipping and mirroring the blocks below the diagonal
    rng = np.random.default_rng(13)
    a = tie_heavy(rng, 300, 37, "relu")
    b = np.maximum(a + rng.standard_normal(a.shape), 0)
    whole_cross, whole_same = kendall.tau_upper_bound(a, b), kendall.tau_upper_bound(a)
    monkeypatch.setattr(kendall, "_ONE_HOT_BYTES", 300 * kendall.COARSE_BUCKETS * 5)
    monkeypatch.setattr(kendall, "_BLOCK_ELEMENTS", kendall.COARSE_BUCKETS ** 2 * 5 * 3)
    np.testing.assert_array_equal(kendall.tau_upper_bound(a, b), whole_cross)
    np.testing.assert_array_equal(kendall.tau_upper_bound(a), whole_same)
    assert_top_equals(kendall.kendall_row_top(a, k=2), measure.kendall_tau_matrix(a), 2)


def test_near_equal_rivals_the_bounds_cannot_separate():
    # column 0 of a is a ranking of 2000 images; each column i of b is that ranking with
    # one pair of neighbours swapped (at a different place): every τ(a_0, b_i) is exactly
    # 1 − 2/n0 · 2 = (n0 − 2) / n0, so the bounds separate nothing and the row's top-3
    # are the three smallest column indices (column 0 excluded as the diagonal)
    rng = np.random.default_rng(14)
    n, j = 2000, 12
    base = rng.permutation(n).astype(np.float64)
    a = np.column_stack([base] + [rng.permutation(n).astype(float) for _ in range(j - 1)])
    b = np.repeat(base[:, None], j, axis=1)
    order = np.argsort(base)
    for i in range(j):
        p, q = order[100 * i + 7], order[100 * i + 8]       # neighbours in rank
        b[[p, q], i] = b[[q, p], i]
    n0 = n * (n - 1) // 2
    top = kendall.kendall_row_top(a, b, k=3)
    assert top.index[0].tolist() == [1, 2, 3]
    np.testing.assert_allclose(top.value[0], (n0 - 2) / n0, rtol=0, atol=1e-15)
    assert_top_equals(top, measure.kendall_tau_matrix(a, b), 3)
    assert top.exact_pairs >= j - 1          # row 0: every rival needed its exact τ


def test_tau_w_with_one_matrix_given():
    rng = np.random.default_rng(15)
    a = tie_heavy(rng, 300, 6, "relu")
    b = np.maximum(a[:, ::-1] + 0.5 * rng.standard_normal(a.shape), 0)
    full = measure.kendall_tau_w(a, b, tau_init=measure.kendall_tau_matrix(a), tau_cross=measure.kendall_tau_matrix(a, b))
    np.testing.assert_array_equal(measure.kendall_tau_w(a, b, tau_init=measure.kendall_tau_matrix(a)), full)
    np.testing.assert_array_equal(measure.kendall_tau_w(a, b, tau_cross=measure.kendall_tau_matrix(a, b)), full)
    np.testing.assert_array_equal(measure.kendall_tau_w(a, b), full)


@pytest.mark.parametrize("shared_from", [1, 10**9])
def test_unrelated_units_nothing_to_prune_either_exact_kernel(monkeypatch, shared_from):
    # independent columns: every τ is near 0, rows have many close rivals; the exact τ
    # goes through the shared-x kernel (rows with many pairs in a batch) or the batched
    # per-pair kernel, forced here both ways, and equals the matrices bit for bit
    monkeypatch.setattr(kendall, "_SHARED_X_PAIRS", shared_from)
    rng = np.random.default_rng(16)
    a = tie_heavy(rng, 500, 24, "coarse")
    b = tie_heavy(rng, 500, 24, "relu")
    cross, same = kendall.kendall_w_maxima(a, b, k=2)
    assert_top_equals(cross, measure.kendall_tau_matrix(a, b), 2)
    assert_top_equals(same, measure.kendall_tau_matrix(a), 2)
