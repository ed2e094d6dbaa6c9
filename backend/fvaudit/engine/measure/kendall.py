"""Kendall's tau (SPEC §3): τ, the τ matrix between every pair of units, and Kendall-τ-W,
whose row maxima are found by bound-and-prune. One module: τ-W's bounds and exact kernel
are the τ kernels' own, so that every path gives the same bits as scipy.

τ is Kendall's tau-b exactly as ``scipy.stats.kendalltau`` computes it (its default
variant): with ``n0 = N(N-1)/2`` pairs, ``n1`` / ``n2`` the pairs tied in x / in y,
``n3`` the pairs tied in both and ``nd`` the discordant pairs,
``τ = (n0 - n1 - n2 + n3 - 2·nd) / sqrt(n0 - n1) / sqrt(n0 - n2)``, clipped to [-1, 1],
NaN when x or y is constant (``n1 == n0`` or ``n2 == n0``, which includes N = 1) and
NaN when x or y holds a NaN (scipy's default ``nan_policy='propagate'``). Because the
same integer counts go through the same floating-point operations, results agree with
scipy to the last bit in practice (the tests ask for 1e-9).

All-pairs algorithm (:func:`kendall_tau_matrix`, for callers that need the matrices;
τ between every pair of units twice is 2·J·(J-1) pairs, 130 560 for J = 256).
:func:`kendall_tau_w` needs only each row's maximum and finds it by bound-and-prune
(below), running the exact kernel on few of the pairs:

1. Every column is converted once to dense integer ranks (ties share a rank), with its
   tied-pair count and, per image, the number of strictly smaller values. The order
   comes from one SIMD sort of uint64 keys (the value's order-preserving 32 bits above
   the image index) when the values fit 32 bits exactly, as float32 scores do.
2. For one column ``x`` of ``a`` and *all* columns ``y`` of ``b`` together, the keys
   ``rank(x)·N + rank(y)`` are sorted along each row (one vectorised ``np.sort`` of a
   ``[Jb, N]`` integer array). The y ranks read in that order are the y sequence in
   "x ascending, ties broken by y ascending" order, as in scipy's Knight algorithm:
   its strict inversions are exactly the discordant pairs, and equal neighbouring keys
   give the joint ties ``n3``.
3. The images in x's minimum tie group A (for ReLU-like scores: where the unit is
   silent, often half of them) come first. Pairs inside A are tied in x; a pair (A,
   rest) is discordant iff the A image has the larger y, and their number is
   ``Σ_{r∈A} #{y < y_r} − (C(|A|, 2) − joint ties in A)``: the first term for every
   (x, y) column pair at once is one float64 matrix product (exact, entries < N²).
   Only the rest of the sequence is searched for inversions.
4. Inversions are counted by a merge-sort decomposition carried out with sorts
   (:func:`_inversions`): at level L every block of ``2^(L+1)`` positions is sorted by
   ``2y + side`` (side 0 for its left half, 1 for its right half). A left element sorts
   before a right element with the same y, so the sum of the sorted positions of the
   right-half elements gives the block's (left > right) pairs in closed form: one sort
   (16-bit keys for N ≤ 16383, rows reshaped to blocks), one mask and one dot product
   per level, all columns of ``b`` at once; the three lowest levels compare directly.

Cost: ``O(Ja · Jb · N log² N)`` elementary operations, almost all inside numpy's SIMD
sort; no Python loop over images or over column pairs (only over the ``Ja`` columns
of ``a``, spread over threads; numpy releases the GIL while sorting). ``a`` against
itself computes the upper triangle only (timings against the scipy double loop:
``bench/kendall_w.py``, results in ``bench/results/``).

Row maxima by bound-and-prune
-----------------------------

Kendall-τ-W_j = max_{i≠j} τ(R_init,j, R_final,i) / max_{i≠j} τ(R_init,j, R_init,i) needs
only the largest τ of each row of two J × J matrices, not the matrices themselves.
:func:`kendall_row_top` finds the ``k`` largest entries of every row exactly (k = 1 for
τ-W; the report's "nearest units" view uses k = 3) and computes the exact τ of only a
few pairs (under 1 % at J = 256):

1. **Buckets.** Every column is cut into at most ``B`` buckets by value: a function of
   its dense rank, so monotone and never splitting a tie group. A column with at most
   ``B`` distinct values gets one bucket per value; a large minimum tie group (the zeros
   of ReLU scores) gets a bucket of its own; the rest are equal quantiles.
2. **Bound.** τ-b's numerator (scipy's, as above) is
   ``S = n0 − n1 − n2 + n3 − 2·nd`` = Σ over image pairs of sign(Δx)·sign(Δy). Let Q be
   the pairs sharing an x bucket or a y bucket. A pair outside Q has both orders fixed
   by its buckets; those pairs add up exactly to ``S_b = 2·C_b − (n0 − Px − Py + Pxy)``,
   where ``C_b`` counts the pairs concordant in both buckets and ``Px``, ``Py``, ``Pxy``
   the pairs sharing an x bucket, a y bucket, a cell. A pair in Q adds at most 1, and 0
   when it is tied in x or in y; the n1 + n2 − n3 tied pairs all lie in Q. Hence
   ``S ≤ S_b + (Px + Py − Pxy) − n1 − n2 + min(n1, n2, Pxy)``, an integer. It is turned
   into τ by the same floating-point operations as the exact counts, so — rounding being
   monotone — the float bound is ≥ the float τ, ties included.
3. **Coarse bound for every pair** (``B`` = 8): the B × B contingency tables of all
   column pairs are one matrix product of int8 one-hot bucket indicators
   (``torch._int_mm``: exact int32 sums, VNNI; float32, exact below 2^24 images, where
   it is missing), then cumulative sums give ``C_b`` and ``Pxy``. ``B`` = 8 measured
   fastest overall of 6–16 (J = 256, N = 10 000): the product grows as B², the pairs
   left for the fine bound shrink more slowly.
4. **Fine bound and exact τ, all rows together.** Each row's 2 columns with the largest
   coarse bound get a fine bound (``B`` = 64: each pair's table by ``bincount``); the
   best of those gets the exact τ, which sets the row's threshold t (its k-th best exact
   value). Columns whose coarse bound is ≥ t get the fine bound; columns whose fine
   bound is ≥ t get the exact τ, best first in rounds (1, 2, 4 … per row), t rising as
   values come in. A pair left out has τ ≤ bound < t, so it cannot be among the row's k
   largest. The exact kernel is :func:`_discordant`'s
   (sort the (x, y) keys, count inversions by sorting), batched over pairs from
   different rows (:func:`_discordant_pairs`); a matrix against itself computes each
   unordered pair once.

Where nothing can be pruned (units unrelated to each other, every τ near 0) nearly every
pair needs its exact τ and the bounds are overhead (``bench/kendall_w.py`` measures both
cases).

Values come from the same integer counts through :func:`_tau_from_counts`, so they
equal ``kendall_tau_matrix`` bit for bit (and scipy's ``kendalltau``, which does the same
arithmetic on the same counts). NaN (a column holding NaN: scipy's
``nan_policy='propagate'``) and constant columns give undefined τ, skipped as ``nanmax``
skips them.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fvaudit.engine.measure.arrays import as_numpy, offdiag_max, safe_ratio

__all__ = ["kendall_tau", "kendall_tau_matrix", "kendall_tau_w", "RowTop", "kendall_row_top",
           "kendall_w_maxima", "tau_w_from_maxima", "tau_upper_bound"]

# elements of one sorted block of work (rows × N); bounds temporary memory per thread
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- helpers


def _score_matrix(x: Any, name: str) -> np.ndarray:
    arr = as_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D score matrix [N images, J units], got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: has no rows (N = 0 images)")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: has no columns (J = 0 units)")
    return arr


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            n = os.cpu_count() or 1
        return max(1, min(n, 8))
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs: must be >= 1, got {n_jobs}")
    return int(n_jobs)


def _map_rows(fn, count: int, workers: int) -> None:
    """``fn(j)`` for j in range(count), on ``workers`` threads (numpy's sorts release the GIL)."""
    if workers > 1 and count > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fn, range(count)))
    else:
        for j in range(count):
            fn(j)


@dataclass
class _Ranked:
    """Columns of a score matrix as dense integer ranks (one row per column)."""

    ranks: np.ndarray    # [J, N] dense rank of each image (0 = the column's minimum), image order
    sorted: np.ndarray   # [J, N] the same ranks in ascending order
    below: np.ndarray    # [J, N] number of images with a strictly smaller value, image order
    ties: np.ndarray     # [J] int64: pairs tied within the column (n1 / n2)
    nan: np.ndarray      # [J] bool: column holds a NaN -> every τ with it is NaN
    n: int


def _order_keys(cols: np.ndarray) -> np.ndarray | None:
    """32-bit unsigned keys with the order of the values (equal values, -0.0 and 0.0
    included, get equal keys), or None when the values do not all fit 32 bits exactly."""
    if cols.dtype == np.float16:
        cols = cols.astype(np.float32)
    elif cols.dtype == np.float64:
        narrow = cols.astype(np.float32)
        if not np.array_equal(narrow, cols):      # not exactly representable (NaN already replaced)
            return None
        cols = narrow
    if cols.dtype == np.float32:
        bits = (cols + np.float32(0)).view(np.uint32)        # + 0 turns -0.0 into 0.0
        # IEEE order: flip every bit of negatives, only the sign bit of the others
        return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    if np.issubdtype(cols.dtype, np.integer):
        lo, hi = int(cols.min()), int(cols.max())
        if lo >= 0 and hi < (1 << 32):
            return cols.astype(np.uint32)
        if lo >= -(1 << 31) and hi < (1 << 31):
            return (cols.astype(np.int64) + (1 << 31)).astype(np.uint32)
    return None


def _sort_columns(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``cols`` [J, N]: the ascending order (an argsort; order inside a tie
    group is arbitrary, nothing downstream depends on it) and where a new value starts
    in that order (bool [J, N]).

    Scores are float32 (or float64 holding float32 values), so (value key << 32 | image)
    packs into one uint64 whose plain sort — SIMD, several times faster than argsort —
    yields both the order and the sorted values.
    """
    j, n = cols.shape
    keys = _order_keys(cols) if n < 2**32 else None
    new_group = np.ones((j, n), dtype=bool)
    if keys is None:
        order = np.argsort(cols, axis=1)
        vals = np.take_along_axis(cols, order, axis=1)
        new_group[:, 1:] = vals[:, 1:] != vals[:, :-1]
        return order, new_group
    packed = keys.astype(np.uint64)
    packed <<= np.uint64(32)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort(axis=1)
    hi = (packed >> np.uint64(32)).astype(np.uint32)
    new_group[:, 1:] = hi[:, 1:] != hi[:, :-1]
    order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int32 if n < 2**31 - 1 else np.int64)
    return order, new_group


def _rank_columns(arr: np.ndarray) -> _Ranked:
    n, j = arr.shape
    cols = np.ascontiguousarray(arr.T)
    if np.issubdtype(cols.dtype, np.floating):
        nan = np.isnan(cols).any(axis=1)
        if nan.any():
            cols = np.where(np.isnan(cols), 0, cols)
    else:
        nan = np.zeros(j, dtype=bool)
    idx = np.int32 if n < 2**31 - 1 else np.int64
    order, new_group = _sort_columns(cols)
    dense = np.cumsum(new_group, axis=1, dtype=idx)
    dense -= 1
    # first sorted position of each value's group = number of strictly smaller values
    first = np.where(new_group, np.arange(n, dtype=idx), 0).astype(idx, copy=False)
    np.maximum.accumulate(first, axis=1, out=first)
    ranks = np.empty_like(dense)
    np.put_along_axis(ranks, order, dense, axis=1)
    below = np.empty_like(first)
    np.put_along_axis(below, order, first, axis=1)
    ties = n * (n - 1) // 2 - first.sum(axis=1, dtype=np.int64)      # Σ_p (p − first(p))
    return _Ranked(ranks, dense, below, ties, nan, n)


def _tied_pairs(sorted_rows: np.ndarray) -> np.ndarray:
    """Per row of a row-sorted integer array: Σ over runs of equal values of c·(c−1)/2."""
    m, n = sorted_rows.shape
    out = np.zeros(m, dtype=np.int64)
    if n < 2:
        return out
    eq = sorted_rows[:, 1:] == sorted_rows[:, :-1]
    if not eq.any():
        return out
    # fast path: often the only run is the leading one (e.g. the zeros of ReLU scores)
    lead = np.count_nonzero(sorted_rows == sorted_rows[:, :1], axis=1).astype(np.int64)
    out += lead * (lead - 1) // 2
    other = eq & (sorted_rows[:, 1:] != sorted_rows[:, :1])
    rows = np.flatnonzero(other.any(axis=1))
    if rows.size:
        # start index of the run each position belongs to; Σ_p (p − start(p)) = Σ_runs C(c, 2)
        idx_dtype = np.int32 if n < 2**31 - 1 else np.int64
        start = np.zeros((rows.size, n), dtype=idx_dtype)
        np.copyto(start[:, 1:], np.arange(1, n, dtype=idx_dtype)[None, :], where=~eq[rows])
        np.maximum.accumulate(start, axis=1, out=start)
        out[rows] = n * (n - 1) // 2 - start.sum(axis=1, dtype=np.int64)
    return out


def _key_dtype(n: int):
    # keys rank(x)·N + rank(y) < N²
    return np.int32 if n * n < 2**31 - 1 else np.int64


_SIDE = {dt: np.array([0, 1], dtype=dt)[:, None] for dt in (np.int16, np.int32, np.int64)}
_BRUTE_LEVELS = 3      # merge levels of 2, 4 and 8 positions: direct comparison beats sorting


def _brute_level(v: np.ndarray, w: int) -> np.ndarray:
    """``v`` [M, blocks, 2w]: Σ over blocks of #(left a, right b) with v_a > v_b, per row."""
    count = np.zeros(v.shape[0], dtype=np.int64)
    for a in range(w):
        left = v[:, :, a]
        for b in range(w, 2 * w):
            count += np.count_nonzero(left > v[:, :, b], axis=1)
    return count


def _inversions(y: np.ndarray, n: int) -> np.ndarray:
    """Strict inversions ``#{p < q: y_p > y_q}`` of every row of ``y`` [M, W] (integers
    in [0, n)), as int64 [M].

    Merge-sort decomposition carried out with sorts: the row is padded with the sentinel
    ``n`` (never part of an inversion) to ``c·2^k`` positions (8 ≤ c < 16 leaf blocks);
    at merge level L every block of ``2^(L+1)`` positions, whose two halves are sorted by
    the level below, is sorted by ``2y + side`` (side 0 for its left half, 1 for its right
    half): a stable sort of two sorted runs, which numpy's timsort does as one merge. A
    left element sorts before a right element with the same y, so Σ over right elements
    of their sorted position p gives the block's inversions in closed form:
    ``wl·wr − (Σp − wr(wr−1)/2)``; the side bits are then cleared, leaving the block
    sorted by y for the level above. Levels inside the leaf blocks work on the reshaped
    ``[M·blocks, 2^(L+1)]`` array (16-bit keys when ``2n+1`` fits); the levels above the
    leaves walk a binary tree over the c leaves, children first. The three lowest levels
    compare elements directly. (Merging sorted halves instead of sorting every block from
    scratch measured 8.0 → 5.0 ms per column pair at N = 50 000.)
    """
    m, width = y.shape
    inv = np.zeros(m, dtype=np.int64)
    if width < 2:
        return inv
    if 2 * n + 1 <= np.iinfo(np.int16).max:
        dt = np.int16
    elif 2 * n + 1 <= np.iinfo(np.int32).max:
        dt = np.int32
    else:
        dt = np.int64
    k = max(1, width.bit_length() - 4)          # leaf block 2^k: between 8 and 15 leaves
    block = 1 << k
    leaves = -(-width // block)
    wp = leaves * block
    acc = np.int32 if wp * wp < 2**31 - 1 else np.int64
    if np.iinfo(dt).max < wp:                    # positions must fit the key type
        dt = np.int32 if wp < 2**31 - 1 else np.int64
    cur = np.full((m, wp), 2 * n, dtype=dt)      # sentinel 2n sits above every 2y
    np.multiply(y, 2, out=cur[:, :width], casting="unsafe")
    side = _SIDE[dt]
    brute = min(k, _BRUTE_LEVELS)
    for level in range(brute):
        w = 1 << level
        inv += _brute_level(cur.reshape(m, wp // (2 * w), 2 * w), w)
    cur.reshape(m * (wp >> brute), 1 << brute).sort(axis=1)   # blocks of 2^brute, sorted once
    bits = np.empty_like(cur)
    for level in range(brute, k):
        w = 1 << level
        nb = wp // (2 * w)
        cur.reshape(m, nb, 2, w)[...] += side    # right halves odd: each half stays sorted
        cur.reshape(m * nb, 2 * w).sort(axis=1, kind="stable")
        np.bitwise_and(cur, 1, out=bits)         # 1 where a right-half element sits
        local = np.tile(np.arange(2 * w, dtype=dt), nb)
        right_pos = np.einsum("ij,j->i", bits, local, dtype=acc).astype(np.int64)
        inv += nb * (w * w + w * (w - 1) // 2) - right_pos
        cur -= bits                              # back to 2y, blocks of 2w sorted

    def merge(lo: int, hi: int) -> None:
        """Leaves [lo, hi) sorted into one run, their cross inversions counted (children first)."""
        if hi - lo < 2:
            return
        mid = (lo + hi) // 2
        merge(lo, mid)
        merge(mid, hi)
        p0, p1, p2 = lo * block, mid * block, hi * block
        seg = cur[:, p0:p2]
        seg[:, p1 - p0:] += 1
        seg.sort(axis=1, kind="stable")
        b = seg & 1
        wl, wr = p1 - p0, p2 - p1
        right_pos = np.einsum("ij,j->i", b, np.arange(p2 - p0, dtype=dt), dtype=acc).astype(np.int64)
        inv[:] += wl * wr - (right_pos - wr * (wr - 1) // 2)
        seg -= b

    merge(0, leaves)
    return inv


def _y_in_x_order(x_ranks: np.ndarray, y_ranks: np.ndarray) -> np.ndarray:
    """For x rows without ties (their dense ranks a permutation of 0..N−1): the y ranks in
    x-ascending order, ``y[argsort(x)]``, by one scatter and one gather per row instead of
    sorting the combined (x, y) keys (2.2 → 0.2 ms per pair at N = 50 000). ``x_ranks``
    [1 or M, N] broadcasts over the rows of ``y_ranks`` [M, N]."""
    m, n = y_ranks.shape
    order = np.empty(x_ranks.shape, dtype=x_ranks.dtype)
    np.put_along_axis(order, x_ranks, np.broadcast_to(np.arange(n, dtype=x_ranks.dtype), x_ranks.shape), axis=1)
    return np.take_along_axis(y_ranks, np.broadcast_to(order, (m, n)), axis=1)


def _discordant(x_ranks: np.ndarray, x_sorted: np.ndarray, y_ranks: np.ndarray,
                joint_ties: bool = True, y_below: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Discordant pairs ``nd`` and joint ties ``n3`` for every row pair (x row, y row).

    ``x_ranks`` [1 or M, N] dense x ranks in image order (broadcast over rows),
    ``x_sorted`` [1 or M, N] the same ranks sorted, ``y_ranks`` [M, N] dense y ranks in
    image order. Returns two int64 arrays [M]. ``joint_ties=False`` skips counting
    ``n3`` (returned as 0): only valid when x has no ties.

    With one shared x row, ``y_below`` [M] may give, per y row, Σ over the images in x's
    minimum group A of "number of y values strictly below": the pairs (A, rest) are then
    counted in closed form and only the rest is searched for inversions (for ReLU-like
    scores A, the images where the unit is silent, is often half of the set).
    """
    m, n = y_ranks.shape
    if n > 1 and bool(np.all(x_sorted[:, -1] == n - 1)):
        # x without ties: no joint ties, and the y sequence in x order is a gather
        return _inversions(_y_in_x_order(x_ranks, y_ranks), n), np.zeros(m, dtype=np.int64)
    dt = _key_dtype(n)
    # the y sequence in (x asc, y asc) order: sort the combined keys rank(x)·N + rank(y)
    key = x_ranks.astype(dt) * n
    key = key + y_ranks.astype(dt, copy=False)   # broadcast -> [M, N], a fresh array
    key.sort(axis=1)
    shared = x_sorted.shape[0] == 1
    a = int(np.count_nonzero(x_sorted[0] == 0)) if shared and y_below is not None else 0
    n3 = np.zeros(m, dtype=np.int64)
    tied_in_a = np.zeros(m, dtype=np.int64)
    if joint_ties:
        if shared:
            n3, tied_in_a = _joint_ties_shared_x(key, x_sorted[0])
        else:
            n3 = _tied_pairs(key)
    y = key[:, a:]
    y -= x_sorted[:, a:].astype(dt) * n        # leaves rank(y), still in (x, y) order
    nd = _inversions(y, n)
    if a:
        # pairs (r in A, s not in A) have x_r < x_s: discordant iff y_r > y_s. Their number:
        # Σ_{r∈A} #{s: y_s < y_r} − #{(r, s) ∈ A²: y_s < y_r}, the latter C(a,2) − ties in A
        nd += y_below - a * (a - 1) // 2 + tied_in_a
    return nd, n3


def _joint_ties_shared_x(key: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint ties of row-sorted keys when every row has the same sorted x ranks ``xs``
    (only positions inside an x-tie group can tie), and those inside the group of the
    minimum x (positions [0, a)). Returns (all, in the first group)."""
    m = key.shape[0]
    same = xs[1:] == xs[:-1]
    zero = np.zeros(m, dtype=np.int64)
    if not same.any():
        return zero, zero
    edges = np.flatnonzero(np.diff(np.r_[0, same.astype(np.int8), 0]))
    starts, ends = edges[0::2], edges[1::2] + 1       # groups [start, end) of length ≥ 2
    first = _tied_pairs(key[:, starts[0]:ends[0]]) if starts[0] == 0 else zero
    if len(starts) <= 8:
        rest = [_tied_pairs(key[:, s:e]) for s, e in zip(starts, ends) if s != 0]
        return first + sum(rest, zero), first
    mask = np.r_[same, False] | np.r_[False, same]      # inside a group of length ≥ 2
    mask[: ends[0] if starts[0] == 0 else 0] = False
    # equal keys share x, so runs never join across two x groups
    return first + _tied_pairs(key[:, mask]), first


def _tau_from_counts(tot: int, xtie, ytie, nd, n3) -> np.ndarray:
    """scipy's tau-b from integer counts (same operations, same order)."""
    xtie = np.asarray(xtie, dtype=np.int64)
    ytie = np.asarray(ytie, dtype=np.int64)
    con_minus_dis = tot - xtie - ytie + n3 - 2 * nd
    undefined = (xtie == tot) | (ytie == tot)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = (con_minus_dis.astype(np.float64)
               / np.sqrt((tot - xtie).astype(np.float64))
               / np.sqrt((tot - ytie).astype(np.float64)))
    tau = np.minimum(1.0, np.maximum(-1.0, tau))
    return np.where(undefined, np.nan, tau)


# --------------------------------------------------------------------------- Kendall

def kendall_tau(r_init: Any, r_final: Any, *, n_jobs: int | None = None) -> np.ndarray:
    """Kendall-τ_j = τ(R_init,j, R_final,j) for every unit j (SPEC §3).

    ``r_init``, ``r_final``: score matrices [N images, J units] of the same image set
    under θ_init and θ_final. Returns float64 [J]. Tau-b as ``scipy.stats.kendalltau``:
    NaN for a unit constant on all images under either model (e.g. silent, all zero),
    NaN when the column holds a NaN, NaN for N = 1. Units are split over ``n_jobs``
    threads (default: this process's cores, at most 8).
    """
    a = _score_matrix(r_init, "r_init")
    b = _score_matrix(r_final, "r_final")
    if a.shape != b.shape:
        raise ValueError(f"r_init {a.shape} and r_final {b.shape}: shapes differ")
    workers = _n_jobs(n_jobs)
    ranked: list = [a, b]

    def rank(i: int) -> None:       # both sides at once: ranking is most of τ's time at N = 50 000
        ranked[i] = _rank_columns(ranked[i])

    _map_rows(rank, 2, min(2, workers))
    ra, rb = ranked
    n, j = a.shape
    if n < 2:
        return np.full(j, np.nan)
    nd = np.empty(j, dtype=np.int64)
    n3 = np.empty(j, dtype=np.int64)
    # chunks of at most _CHUNK_ELEMENTS, and at least one per thread (bench/imagenet_projection.py
    # measured J = 768, N = 50 000 at 14 s in one thread: the sorts release the GIL)
    rows = max(1, min(_CHUNK_ELEMENTS // n, -(-j // workers)))
    parts = [slice(s, min(j, s + rows)) for s in range(0, j, rows)]

    def run(i: int) -> None:
        sl = parts[i]
        nd[sl], n3[sl] = _discordant(ra.ranks[sl], ra.sorted[sl], rb.ranks[sl])

    _map_rows(run, len(parts), workers)
    tau = _tau_from_counts(n * (n - 1) // 2, ra.ties, rb.ties, nd, n3)
    tau[ra.nan | rb.nan] = np.nan
    return tau


def kendall_tau_matrix(a: Any, b: Any = None, *, n_jobs: int | None = None) -> np.ndarray:
    """τ between every column of ``a`` and every column of ``b`` (SPEC §3).

    ``a`` [N, Ja], ``b`` [N, Jb] score matrices over the same N images (``b`` omitted or
    equal to ``a``: ``a`` against itself, only the upper triangle is computed).
    Returns float64 [Ja, Jb] with entry [j, i] = ``scipy.stats.kendalltau(a[:, j],
    b[:, i]).statistic``; NaN where either column is constant or holds a NaN (and
    everywhere for N = 1). The diagonal of ``a`` against itself is τ(x, x) as scipy
    rounds it (1 within 3e-16; NaN for a constant column). ``n_jobs`` threads
    (default: the usable CPUs, at most 8).
    """
    A = _score_matrix(a, "a")
    symmetric = b is None or b is a
    if not symmetric:
        B = _score_matrix(b, "b")
        if B.shape[0] != A.shape[0]:
            raise ValueError(f"a has {A.shape[0]} rows (images) but b has {B.shape[0]}: they must match")
        symmetric = B.shape == A.shape and B.dtype == A.dtype and np.array_equal(A, B)
    else:
        B = A
    workers = _n_jobs(n_jobs)
    ra = _rank_columns(A)
    rb = ra if symmetric else _rank_columns(B)
    n, ja, jb = A.shape[0], A.shape[1], B.shape[1]
    if n < 2:
        return np.full((ja, jb), np.nan)
    tot = n * (n - 1) // 2
    nd = np.zeros((ja, jb), dtype=np.int64)     # discordant pairs
    n3 = np.zeros((ja, jb), dtype=np.int64)     # joint ties
    rows = max(1, _CHUNK_ELEMENTS // n)
    # a joint tie needs a tie in x: without ties in column j there are none
    x_has_ties = ra.ties > 0
    # Σ over the images where column j of a is at its minimum of "y values strictly below",
    # for every column of b (exact in float64: entries < N²)
    below_a_min = np.empty((ja, jb), dtype=np.int64)
    below_b = rb.below.astype(np.float64)
    for s in range(0, ja, 256):
        at_min = (ra.ranks[s:s + 256] == 0).astype(np.float64)
        below_a_min[s:s + 256] = np.rint(at_min @ below_b.T).astype(np.int64)
    del below_b

    def row(j: int) -> None:
        xr, xs = ra.ranks[j:j + 1], ra.sorted[j:j + 1]
        for s in range(j + 1 if symmetric else 0, jb, rows):
            e = min(jb, s + rows)
            nd[j, s:e], n3[j, s:e] = _discordant(xr, xs, rb.ranks[s:e], joint_ties=bool(x_has_ties[j]),
                                                 y_below=below_a_min[j, s:e])

    _map_rows(row, ja, workers)
    if symmetric:
        # both counts are symmetric in (x, y); τ(x, x): nd = 0 and the joint ties are the x ties
        lower = np.tril_indices(ja, -1)
        nd[lower] = nd.T[lower]
        n3[lower] = n3.T[lower]
        n3[np.diag_indices(ja)] = ra.ties
    # tau from the counts in (x, y) order for every entry, exactly as scipy rounds it
    out = _tau_from_counts(tot, ra.ties[:, None], rb.ties[None, :], nd, n3)
    out[ra.nan, :] = np.nan
    out[:, rb.nan] = np.nan
    return out


def kendall_tau_w(r_init: Any, r_final: Any, *, n_jobs: int | None = None,
                  tau_init: Any = None, tau_cross: Any = None) -> np.ndarray:
    """Kendall-τ-W_j = max_{i≠j} τ(R_init,j, R_final,i) / max_{i≠j} τ(R_init,j, R_init,i)
    (SPEC §3, "whack-a-mole": did another unit take over unit j's ranking?).

    ``r_init``, ``r_final``: score matrices [N, J], J ≥ 2. The maxima skip NaN (nanmax
    over i ≠ j). Returns float64 [J]; NaN where the numerator or denominator has no
    defined τ (e.g. unit j constant on D_τ under θ_init) and NaN where the denominator
    is exactly 0. A negative denominator (no other unit ranks the images like j) is
    used as it is, so the ratio then flips sign, as the definition states.

    Only the row maxima are needed, so they are found by bound-and-prune
    (below: exact τ for few pairs, the same bits as the matrices would give). ``tau_init`` = ``kendall_tau_matrix(r_init)`` and
    ``tau_cross`` = ``kendall_tau_matrix(r_init, r_final)`` may be passed when a caller
    has them anyway; they are then used instead.
    """
    a = _score_matrix(r_init, "r_init")
    b = _score_matrix(r_final, "r_final")
    if a.shape != b.shape:
        raise ValueError(f"r_init {a.shape} and r_final {b.shape}: shapes differ")
    j = a.shape[1]
    if j < 2:
        raise ValueError(f"r_init: Kendall-τ-W needs at least 2 units (J ≥ 2) to compare against, got J = {j}")
    mats = {}
    for name, given in (("tau_init", tau_init), ("tau_cross", tau_cross)):
        if given is not None:
            m = as_numpy(given, name).astype(np.float64)
            if m.shape != (j, j):
                raise ValueError(f"{name}: expected shape {(j, j)}, got {m.shape}")
            mats[name] = m
    if not mats:
        return tau_w_from_maxima(*kendall_w_maxima(a, b, n_jobs=n_jobs))
    num = (offdiag_max(mats["tau_cross"]) if "tau_cross" in mats
           else kendall_row_top(a, b, n_jobs=n_jobs).max)
    den = (offdiag_max(mats["tau_init"]) if "tau_init" in mats
           else kendall_row_top(a, n_jobs=n_jobs).max)
    return safe_ratio(num, den)


# --------------------------------------------------------------------------- row maxima (τ-W)

COARSE_BUCKETS = 8       # every pair: a J·8 × J·8 int8 product (measured best of 6..16)
FINE_BUCKETS = 64        # surviving pairs: a 64 × 64 histogram each
# table entries and their cumulative sums multiply exactly in int32 below this many images
_INT32_IMAGES = 46_000
# int32 table elements per block of rows (~64 MB each; three such arrays live at once)
_BLOCK_ELEMENTS = 1 << 24
# int8 one-hot indicators of one block of columns (N · columns · B bytes)
_ONE_HOT_BYTES = 1 << 28


@dataclass
class RowTop:
    """The ``k`` largest τ of every row of a τ matrix; equal values in column order."""

    index: np.ndarray     # [Ja, k] int64 column; -1 where the row has fewer defined values
    value: np.ndarray     # [Ja, k] float64 τ; NaN where index is -1
    exact_pairs: int      # exact τ computations (against itself: one per unordered pair, both entries)
    fine_pairs: int       # fine-bound computations (likewise)
    eligible_pairs: int   # pairs with a defined τ (off the diagonal when it is excluded)

    @property
    def max(self) -> np.ndarray:
        """Row maxima over the defined values, NaN for a row without one (= nanmax)."""
        return self.value[:, 0].copy()


@dataclass
class _Side:
    """One score matrix, prepared once: ranks, buckets, one-hot coarse indicators."""

    r: _Ranked
    coarse: np.ndarray        # [J, N] uint8 coarse bucket
    coarse_same: np.ndarray   # [J] int64 pairs sharing a coarse bucket
    fine: np.ndarray          # [J, N] uint8 fine bucket
    fine_same: np.ndarray
    valid: np.ndarray         # [J] bool: τ with this column is defined (no NaN, not constant)

    @classmethod
    def of(cls, arr: np.ndarray, coarse: int, fine: int) -> "_Side":
        r = _rank_columns(arr)
        tot = r.n * (r.n - 1) // 2
        cb, cs = _buckets(r, coarse)
        fb, fs = _buckets(r, fine)
        return cls(r, cb, cs, fb, fs, ~r.nan & (r.ties < tot))


def _buckets(r: _Ranked, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket of every image in every column [J, N] (uint8): monotone in the value and
    constant on tie groups (a function of the dense rank); and per column the number of
    image pairs sharing a bucket [J] (int64)."""
    j, n = r.ranks.shape
    wide = np.int32 if n * n_buckets < 2**31 else np.int64
    distinct = r.sorted[:, -1].astype(np.int64) + 1
    zmin = np.count_nonzero(r.sorted == 0, axis=1).astype(np.int64)
    out = np.empty((j, n), dtype=np.uint8)
    few = distinct <= n_buckets                        # one bucket per value: exact
    big_min = ~few & (zmin * n_buckets >= n)           # the minimum's tie group alone in bucket 0
    rest = ~few & ~big_min
    for rows, kind in ((few, "few"), (big_min, "big_min"), (rest, "rest")):
        if not rows.any():
            continue
        sel = slice(None) if rows.all() else rows      # no fancy-index copy in the usual case
        if kind == "few":
            out[sel] = r.ranks[sel]
            continue
        below = r.below[sel].astype(wide)
        if kind == "big_min":
            z = zmin[sel].astype(wide)[:, None]
            below -= z                                 # < 0 exactly on the minimum's group
            below *= n_buckets - 1
            below //= np.maximum(n - z, 1)
            below += 1
            np.maximum(below, 0, out=below)            # the minimum's group: bucket 0
        else:
            below *= n_buckets
            below //= n
        out[sel] = below
    flat = out + (np.arange(j, dtype=np.int64) * n_buckets)[:, None]
    counts = np.bincount(flat.ravel(), minlength=j * n_buckets).reshape(j, n_buckets)
    return out, (counts * (counts - 1) // 2).sum(axis=1)


def _bound(tot: int, cb, pxy, px, py, n1, n2) -> np.ndarray:
    """Upper bound on τ-b from bucket counts (module docstring, step 2), float64."""
    cb, pxy, px, py, n1, n2 = (np.asarray(v, dtype=np.int64) for v in (cb, pxy, px, py, n1, n2))
    s_b = 2 * cb - (tot - px - py + pxy)
    s_max = s_b + (px + py - pxy) - n1 - n2 + np.minimum(np.minimum(n1, n2), pxy)
    # _tau_from_counts computes (tot − n1 − n2 + n3 − 2·nd): n3 chosen so that equals s_max
    return _tau_from_counts(tot, n1, n2, np.zeros_like(s_max), s_max - (tot - n1 - n2))


def _one_hot(buckets: np.ndarray, n_buckets: int, images_first: bool) -> torch.Tensor:
    """int8 indicators of the buckets [J, N]: [N, J·B] (``images_first``) or [J·B, N];
    entry (n, j·B + b) is 1 where image n lies in bucket b of column j. Built as one
    numpy comparison (bool is one byte 0/1, viewed as int8 without a copy)."""
    j, n = buckets.shape
    levels = np.arange(n_buckets, dtype=np.uint8)
    if images_first:
        hot = np.ascontiguousarray(buckets.T)[:, :, None] == levels[None, None, :]
        return torch.from_numpy(hot.view(np.int8).reshape(n, j * n_buckets))
    hot = buckets[:, None, :] == levels[None, :, None]
    return torch.from_numpy(hot.view(np.int8).reshape(j * n_buckets, n))


def _count_product(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``lhs @ rhs`` for 0/1 int8 matrices [R, N] @ [N, C], as exact int32 counts."""
    if hasattr(torch, "_int_mm"):
        try:
            return torch._int_mm(lhs, rhs)
        except RuntimeError:       # no int8 kernel on this build / device
            pass
    if lhs.shape[1] >= 1 << 24:
        return (lhs.double() @ rhs.double()).to(torch.int32)
    return (lhs.float() @ rhs.float()).to(torch.int32)


def _table_counts(t: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """From contingency tables ``t`` [R, B, C, B] (x bucket, y bucket): C_b (pairs
    concordant in both buckets) and Pxy (pairs sharing a cell), int64 [R, C].

    Cell counts and their cumulative sums are ≤ N, so their products fit int32 below
    46 000 images; sums go to int64. Loops run over the B x-buckets only (contiguous
    slices; numpy's cumsum along a middle axis is several times slower)."""
    wide = np.int32 if n < _INT32_IMAGES else np.int64
    t = t.astype(wide, copy=False)
    nb = t.shape[1]
    if t.shape[2] == 1:             # a few tables (the fine bound): plain 2-D cumulative sums
        flat = t[:, :, 0]
        cum = np.cumsum(np.cumsum(flat, axis=2, dtype=wide), axis=1, dtype=wide)
        cb = np.einsum("rab,rab->r", flat[:, 1:, 1:], cum[:, :-1, :-1], dtype=np.int64)
        pxy = np.einsum("rab,rab->r", flat, flat, dtype=np.int64)
        return cb[:, None], (pxy[:, None] - n) // 2
    below = np.cumsum(t[:, 0], axis=-1, dtype=wide)      # #{a' ≤ a, b' ≤ b}, running over a
    cb = np.zeros(t.shape[::2], dtype=np.int64)
    pxy = np.einsum("rcb,rcb->rc", t[:, 0], t[:, 0], dtype=np.int64)
    for a in range(1, nb):
        row = t[:, a]
        cb += np.einsum("rcb,rcb->rc", row[:, :, 1:], below[:, :, :-1], dtype=np.int64)
        pxy += np.einsum("rcb,rcb->rc", row, row, dtype=np.int64)
        if a + 1 < nb:
            below += np.cumsum(row, axis=-1, dtype=wide)
    return cb, (pxy - n) // 2


def _coarse_bounds(sa: _Side, sb: _Side, nb: int) -> np.ndarray:
    """Coarse upper bound on τ for every pair [Ja, Jb]; -inf where τ is undefined.

    Blocks of rows against blocks of columns (the one-hot indicators of a column block
    take N·columns·B bytes, bounded by ``_ONE_HOT_BYTES``). A matrix against itself
    (``sb is sa``) computes each row block against the columns from its own first row
    on only, and mirrors the integer counts (C_b and Pxy are symmetric in x and y):
    about 56 % of the product at J = 256."""
    n, ja, jb = sa.r.n, sa.coarse.shape[0], sb.coarse.shape[0]
    tot = n * (n - 1) // 2
    symmetric = sb is sa
    cb = np.zeros((ja, jb), dtype=np.int64)
    pxy = np.zeros((ja, jb), dtype=np.int64)
    col_step = max(1, _ONE_HOT_BYTES // (n * nb))
    for cs in range(0, jb, col_step):
        ce = min(jb, cs + col_step)
        eb = None if symmetric else _one_hot(sb.coarse[cs:ce], nb, images_first=True)
        step = max(1, _BLOCK_ELEMENTS // (nb * nb * (ce - cs)))
        if symmetric:
            step = min(step, max(16, -(-ja // 8)))
        for s in range(0, ce if symmetric else ja, step):
            e = min(ja, s + step)
            c0 = max(cs, s) if symmetric else cs          # first column of this block's product
            ea = _one_hot(sa.coarse[s:e], nb, images_first=False)
            rhs = _one_hot(sb.coarse[c0:ce], nb, images_first=True) if symmetric else eb
            tables = _count_product(ea, rhs).view(e - s, nb, ce - c0, nb).numpy()
            cb[s:e, c0:ce], pxy[s:e, c0:ce] = _table_counts(tables, n)
    if symmetric:
        lower = np.tril_indices(ja, -1)
        cb[lower] = cb.T[lower]
        pxy[lower] = pxy.T[lower]
    out = _bound(tot, cb, pxy, sa.coarse_same[:, None], sb.coarse_same[None, :],
                 sa.r.ties[:, None], sb.r.ties[None, :])
    out[~sa.valid, :] = -np.inf
    out[:, ~sb.valid] = -np.inf
    return out


# image-pair work items per chunk (pairs × N elements): bounds temporary memory
_PAIR_CHUNK_ELEMENTS = 1 << 22


def _chunks(count: int, n: int) -> list[slice]:
    step = max(1, _PAIR_CHUNK_ELEMENTS // max(n, 1))
    return [slice(s, min(count, s + step)) for s in range(0, count, step)]


def _fine_bounds(sa: _Side, sb: _Side, js: np.ndarray, cols: np.ndarray, nb: int = FINE_BUCKETS,
                 both: bool = False) -> np.ndarray:
    """Fine upper bound on τ(a_j, b_i) for the pairs (js[p], cols[p]): each pair's
    nb × nb table by one ``bincount`` over its N images. ``both`` (a matrix against
    itself): also the bound on τ(a_i, a_j) from the same symmetric counts, as [2, m]."""
    n, m = sa.r.n, cols.size
    keys = sa.fine[js].astype(np.uint16)                              # cell x·nb + y < 2^16
    keys *= nb
    keys += sb.fine[cols]
    # one bincount per pair: measured ~2x faster than widening the keys for a single call
    t = np.stack([np.bincount(row, minlength=nb * nb) for row in keys]).reshape(m, nb, 1, nb)
    cb, pxy = _table_counts(t, n)
    tot = n * (n - 1) // 2
    fwd = _bound(tot, cb[:, 0], pxy[:, 0], sa.fine_same[js], sb.fine_same[cols], sa.r.ties[js], sb.r.ties[cols])
    if not both:
        return fwd
    back = _bound(tot, cb[:, 0], pxy[:, 0], sb.fine_same[cols], sa.fine_same[js], sb.r.ties[cols], sa.r.ties[js])
    return np.stack([fwd, back])


def _discordant_pairs(ra: _Ranked, rb: _Ranked, js: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discordant pairs nd and joint ties n3 of (a_js[p], b_cols[p]) for every p: the
    counts :func:`_discordant` gives, for pairs of different x columns in one batch.

    As there, the images of x's minimum tie group A (per pair: its first a_p positions
    in (x, y) order) are left out of the inversion search and their pairs with the rest
    counted in closed form; the remaining y sequences are left-aligned and padded with
    the sentinel N, which is never part of an inversion.
    """
    n = ra.n
    free = ra.sorted[js, -1] == n - 1                                  # x without ties: a gather
    if free.any() and n > 1:
        nd = np.empty(cols.size, dtype=np.int64)
        n3 = np.zeros(cols.size, dtype=np.int64)
        f = np.flatnonzero(free)
        nd[f] = _inversions(_y_in_x_order(ra.ranks[js[f]], rb.ranks[cols[f]]), n)
        rest = np.flatnonzero(~free)
        if rest.size:
            nd[rest], n3[rest] = _discordant_pairs(ra, rb, js[rest], cols[rest])
        return nd, n3
    m = cols.size
    dt = _key_dtype(n)
    xr = ra.ranks[js]
    key = xr.astype(dt) * n
    key += rb.ranks[cols].astype(dt, copy=False)
    key.sort(axis=1)
    n3 = _tied_pairs(key)
    a = np.count_nonzero(ra.sorted[js] == 0, axis=1)                   # |A| per pair, ≥ 1
    y_below = np.einsum("pn,pn->p", (xr == 0).astype(np.int32), rb.below[cols].astype(np.int32, copy=False),
                        dtype=np.int64)
    # joint ties inside A: the first a_p keys (sorted), later positions made distinct and larger
    amax = int(a.max())
    head = key[:, :amax].astype(np.int64)
    pos = np.arange(amax)
    head = np.where(pos[None, :] < a[:, None], head, np.int64(n) * n + pos[None, :])
    tied_in_a = _tied_pairs(head)
    key -= ra.sorted[js].astype(dt) * n                                # rank(y) in (x, y) order
    width = n - int(a.min())
    idx = a[:, None] + np.arange(width)[None, :]
    y = np.take_along_axis(key, np.minimum(idx, n - 1), axis=1)
    y[idx >= n] = n
    nd = _inversions(y, n)
    nd += y_below - a.astype(np.int64) * (a - 1) // 2 + tied_in_a
    return nd, n3


# a row with at least this many pairs in one batch uses the shared-x kernel (one x column
# against many y columns: the keys need no per-pair x copy, as in kendall_tau_matrix)
_SHARED_X_PAIRS = 12


def _discordant_grouped(ra: _Ranked, rb: _Ranked, js: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """nd and n3 for the pairs (js[p], cols[p]): rows with many pairs through
    :func:`_discordant` (shared x), the rest together through :func:`_discordant_pairs`."""
    nd = np.empty(cols.size, dtype=np.int64)
    n3 = np.empty(cols.size, dtype=np.int64)
    rows, inverse, counts = np.unique(js, return_inverse=True, return_counts=True)
    many = counts[inverse] >= _SHARED_X_PAIRS
    for r in rows[counts >= _SHARED_X_PAIRS]:
        sel = np.flatnonzero(js == r)
        c = cols[sel]
        y_below = rb.below[c][:, ra.ranks[r] == 0].sum(axis=1, dtype=np.int64)
        nd[sel], n3[sel] = _discordant(ra.ranks[r:r + 1], ra.sorted[r:r + 1], rb.ranks[c],
                                         joint_ties=bool(ra.ties[r] > 0), y_below=y_below)
    rest = np.flatnonzero(~many)
    if rest.size:
        nd[rest], n3[rest] = _discordant_pairs(ra, rb, js[rest], cols[rest])
    return nd, n3


def _exact(sa: _Side, sb: _Side, js: np.ndarray, cols: np.ndarray, both: bool = False) -> np.ndarray:
    """Exact τ(a_js[p], b_cols[p]): the integer counts of kendall_tau_matrix's kernel,
    through its arithmetic (:func:`_tau_from_counts`), hence the same bits. ``both``
    (a matrix against itself): also τ(a_i, a_j) from the same symmetric counts, [2, m]."""
    nd, n3 = _discordant_grouped(sa.r, sb.r, js, cols)
    n = sa.r.n
    fwd = _tau_from_counts(n * (n - 1) // 2, sa.r.ties[js], sb.r.ties[cols], nd, n3)
    if not both:
        return fwd
    return np.stack([fwd, _tau_from_counts(n * (n - 1) // 2, sb.r.ties[cols], sa.r.ties[js], nd, n3)])


def _pairwise(fn, sa: _Side, sb: _Side, js: np.ndarray, cols: np.ndarray, workers: int,
              both: bool = False) -> np.ndarray:
    """``fn`` over the pairs in chunks, on ``workers`` threads; float64 [pairs] ([2, pairs]
    with ``both``)."""
    out = np.empty((2, cols.size) if both else cols.size)
    parts = _chunks(cols.size, sa.r.n)
    if workers > 1 and len(parts) == 1 and cols.size > 1:        # split a single chunk for the threads
        half = cols.size // 2
        parts = [slice(0, half), slice(half, cols.size)]

    def run(i: int) -> None:
        out[..., parts[i]] = fn(sa, sb, js[parts[i]], cols[parts[i]], both=both) if both else \
            fn(sa, sb, js[parts[i]], cols[parts[i]])

    _map_rows(run, len(parts), workers)
    return out


def _top(sa: _Side, sb: _Side, k: int, exclude_diagonal: bool, n_jobs: int | None,
         head: int = 2) -> RowTop:
    """Rows' k largest τ (module docstring, step 4), all rows advancing together so that
    every fine bound and exact τ runs in large batches.

    The ``head`` columns with the largest coarse bound of each row get the fine bound;
    the k best of those by fine bound get the exact τ, which sets each row's threshold
    t (its k-th best exact value). Other columns whose coarse bound reaches t get the
    fine bound; then, in rounds, each row's best remaining columns by fine bound get the
    exact τ (1, 2, 4, ... per row), t rises, and columns whose fine bound fell below t
    are dropped.
    """
    ja, jb = sa.coarse.shape[0], sb.coarse.shape[0]
    index = np.full((ja, k), -1, dtype=np.int64)
    value = np.full((ja, k), np.nan)
    if sa.r.n < 2:
        return RowTop(index, value, 0, 0, 0)
    workers = _n_jobs(n_jobs)
    ub = _coarse_bounds(sa, sb, COARSE_BUCKETS)
    if exclude_diagonal:
        np.fill_diagonal(ub, -np.inf)
    eligible = int(np.count_nonzero(ub > -np.inf))
    fine = np.full((ja, jb), np.nan)        # fine bound where computed
    exact = np.full((ja, jb), np.nan)       # exact τ where computed
    rows = np.arange(ja)

    symmetric = sb is sa and exclude_diagonal
    computed = {"fine": 0, "exact": 0}

    def fill(target: np.ndarray, fn, js: np.ndarray, cols: np.ndarray) -> None:
        if symmetric:
            # a matrix against itself: each unordered pair once, both entries from its counts
            key = np.unique(np.minimum(js, cols) * jb + np.maximum(js, cols))
            js, cols = np.divmod(key, jb)
        if not cols.size:
            return
        computed["fine" if target is fine else "exact"] += cols.size
        got = _pairwise(fn, sa, sb, js, cols, workers, both=symmetric)
        if symmetric:
            target[js, cols], target[cols, js] = got
        else:
            target[js, cols] = got

    def fine_for(js, cols):
        fill(fine, _fine_bounds, js, cols)

    def exact_for(js, cols):
        fill(exact, _exact, js, cols)

    def threshold() -> np.ndarray:
        done = np.where(np.isnan(exact), -np.inf, exact)
        return np.partition(done, jb - k, axis=1)[:, jb - k] if k <= jb else np.full(ja, -np.inf)

    order = np.argsort(-ub, axis=1, kind="stable")
    h = min(max(head, k), jb)
    js, cols = np.repeat(rows, h), order[:, :h].ravel()
    live = ub[js, cols] > -np.inf
    fine_for(js[live], cols[live])
    # the k best of the head by fine bound: exact
    fb = np.where(np.isnan(fine), -np.inf, fine)
    first = np.argsort(-fb, axis=1, kind="stable")[:, :k]
    js, cols = np.repeat(rows, first.shape[1]), first.ravel()
    live = fb[js, cols] > -np.inf
    exact_for(js[live], cols[live])
    t = threshold()
    # every other column whose coarse bound reaches t: fine bound
    todo = (ub >= t[:, None]) & (ub > -np.inf) & np.isnan(fine)
    js, cols = np.nonzero(todo)
    fine_for(js, cols)
    per_row = 1
    while True:
        cand = (fine >= t[:, None]) & np.isnan(exact)
        if not cand.any():
            break
        fb = np.where(cand, fine, -np.inf)
        take = np.argsort(-fb, axis=1, kind="stable")[:, :per_row]
        js, cols = np.repeat(rows, take.shape[1]), take.ravel()
        live = fb[js, cols] > -np.inf
        exact_for(js[live], cols[live])
        t = threshold()
        per_row *= 2
    done = np.where(np.isnan(exact), -np.inf, exact)
    cols_idx = np.broadcast_to(np.arange(jb), (ja, jb))
    best = np.lexsort((cols_idx, -done), axis=1)[:, :k]     # largest τ first, then the smaller column
    vals = np.take_along_axis(done, best, axis=1)
    ok = vals > -np.inf
    w = best.shape[1]                                       # min(k, Jb)
    index[:, :w][ok] = best[ok]
    value[:, :w][ok] = vals[ok]
    return RowTop(index, value, computed["exact"], computed["fine"], eligible)


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k: must be an integer >= 1, got {k}")
    return int(k)


def kendall_row_top(a, b=None, *, k: int = 1, exclude_diagonal: bool = True,
                    n_jobs: int | None = None) -> RowTop:
    """The ``k`` largest τ(a_j, b_i) of every column j of ``a`` over the columns i of
    ``b`` (``b`` omitted: ``a`` itself), exactly as ``kendall_tau_matrix(a, b)`` holds
    them, without computing the matrix (module docstring).

    ``exclude_diagonal``: skip i = j (SPEC §3 takes the maxima over i ≠ j; needs
    Ja = Jb). Undefined τ (NaN, constant columns) are skipped; a row with fewer than
    ``k`` defined values is padded with index -1 and value NaN. Equal values are
    ordered by the smaller column index.
    """
    k = _check_k(k)
    A = _score_matrix(a, "a")
    B = A if b is None else _score_matrix(b, "b")
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"a has {A.shape[0]} rows (images) but b has {B.shape[0]}: they must match")
    if exclude_diagonal and A.shape[1] != B.shape[1]:
        raise ValueError(f"exclude_diagonal: needs as many columns in b as in a, got {A.shape[1]} and {B.shape[1]}")
    sa = _Side.of(A, COARSE_BUCKETS, FINE_BUCKETS)
    sb = sa if b is None else _Side.of(B, COARSE_BUCKETS, FINE_BUCKETS)
    return _top(sa, sb, k, exclude_diagonal, n_jobs)


def kendall_w_maxima(r_init, r_final, *, k: int = 1, n_jobs: int | None = None) -> tuple[RowTop, RowTop]:
    """Both rows-maxima of Kendall-τ-W (SPEC §3): (init × final, init × init), each the
    ``k`` largest over i ≠ j. ``r_init`` is ranked and bucketed once for both."""
    k = _check_k(k)
    a = _score_matrix(r_init, "r_init")
    b = _score_matrix(r_final, "r_final")
    if a.shape != b.shape:
        raise ValueError(f"r_init {a.shape} and r_final {b.shape}: shapes differ")
    sides: list = [a, b]

    def prepare(i: int) -> None:
        sides[i] = _Side.of(sides[i], COARSE_BUCKETS, FINE_BUCKETS)

    _map_rows(prepare, 2, min(2, _n_jobs(n_jobs)))
    sa, sb = sides
    return _top(sa, sb, k, True, n_jobs), _top(sa, sa, k, True, n_jobs)


def tau_w_from_maxima(cross: RowTop, same: RowTop) -> np.ndarray:
    """Kendall-τ-W [J] from :func:`kendall_w_maxima`'s two results (SPEC §3): NaN where
    either maximum is undefined or the denominator is exactly 0."""
    return safe_ratio(cross.max, same.max)


def tau_upper_bound(a, b=None, *, n_buckets: int = COARSE_BUCKETS, fine: bool = False) -> np.ndarray:
    """The upper bound on ``kendall_tau_matrix(a, b)`` that prunes pairs, for every pair
    [Ja, Jb] (NaN where τ is undefined): the coarse path (one int8 product) or, with
    ``fine``, the per-row histogram path. For tests and the benchmark."""
    if not 2 <= n_buckets <= 255:      # uint8 buckets; fine cells x·B + y fit uint16
        raise ValueError(f"n_buckets: must lie in [2, 255], got {n_buckets}")
    A = _score_matrix(a, "a")
    B = A if b is None else _score_matrix(b, "b")
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"a has {A.shape[0]} rows (images) but b has {B.shape[0]}: they must match")
    sa = _Side.of(A, n_buckets, n_buckets)
    sb = sa if b is None else _Side.of(B, n_buckets, n_buckets)
    if A.shape[0] < 2:
        return np.full((A.shape[1], B.shape[1]), np.nan)
    if fine:
        js, cols = np.divmod(np.arange(A.shape[1] * B.shape[1]), B.shape[1])
        out = _fine_bounds(sa, sb, js, cols, n_buckets).reshape(A.shape[1], B.shape[1])
    else:
        out = _coarse_bounds(sa, sb, n_buckets)
    out[~sa.valid, :] = np.nan
    out[:, ~sb.valid] = np.nan
    return out
