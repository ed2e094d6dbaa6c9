"""Attack metrics (SPEC §3): Kendall-τ, Kendall-τ-W, CLIP-δ, CLIP-W, top-k overlap,
accuracy, push-up success and NaN-aware aggregation.

Pure numpy; no web, database or model imports. Every public function validates its
inputs and raises ``ValueError`` naming the argument and the problem.

Kendall's tau
-------------
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
(:mod:`fvaudit.engine.measure.kendall_w`), running the exact kernel below on about 1 % of the
pairs:

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
itself computes the upper triangle only. J = 256, N = 10 000, both matrices of τ-W:
about 5 s on two CPU cores for ReLU-like scores, about 9 s without ties, against about
2 minutes for the scipy double loop (``bench/kendall_w.py``).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "kendall_tau",
    "kendall_tau_matrix",
    "kendall_tau_w",
    "set_similarity",
    "clip_delta",
    "clip_w",
    "topk_overlap",
    "accuracy",
    "nan_aggregate",
    "pushup_success",
]

# elements of one sorted block of work (rows × N); bounds temporary memory per thread
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- helpers

def _to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None


def _score_matrix(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
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
    at merge level L every block of ``2^(L+1)`` positions is sorted by ``2y + side``
    (side 0 for its left half, 1 for its right half). A left element sorts before a right
    element with the same y, so Σ over right elements of their sorted position p gives
    the block's inversions in closed form: ``wl·wr − (Σp − wr(wr−1)/2)``. Levels inside
    the leaf blocks sort the reshaped ``[M·blocks, 2^(L+1)]`` array (16-bit keys when
    ``2n+1`` fits); the levels above the leaves walk a binary tree over the c leaves.
    The three lowest levels compare elements directly.
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
    y2 = np.full((m, wp), 2 * n, dtype=dt)       # sentinel 2n sits above every 2y
    np.multiply(y, 2, out=y2[:, :width], casting="unsafe")
    work = np.empty_like(y2)
    side = _SIDE[dt]
    for level in range(k):
        w = 1 << level
        nb = wp // (2 * w)
        if level < _BRUTE_LEVELS:
            inv += _brute_level(y2.reshape(m, nb, 2 * w), w)
            continue
        np.add(y2.reshape(m, nb, 2, w), side, out=work.reshape(m, nb, 2, w))
        flat = work.reshape(m * nb, 2 * w)
        flat.sort(axis=1)
        flat &= 1                                # 1 where a right-half element sits
        local = np.tile(np.arange(2 * w, dtype=dt), nb)
        right_pos = np.einsum("ij,j->i", work, local, dtype=acc).astype(np.int64)
        inv += nb * (w * w + w * (w - 1) // 2) - right_pos
    # merge levels above the leaf blocks: a binary tree over the leaves
    nodes = [(0, leaves)]
    while nodes:
        lo, hi = nodes.pop()
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        p0, p1, p2 = lo * block, mid * block, hi * block
        seg = work[:, : p2 - p0]
        np.copyto(seg, y2[:, p0:p2])
        seg[:, p1 - p0:] += 1
        seg.sort(axis=1)
        seg &= 1
        wl, wr = p1 - p0, p2 - p1
        right_pos = np.einsum("ij,j->i", seg, np.arange(p2 - p0, dtype=dt), dtype=acc).astype(np.int64)
        inv += wl * wr - (right_pos - wr * (wr - 1) // 2)
        nodes += [(lo, mid), (mid, hi)]
    return inv


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

def kendall_tau(r_init: Any, r_final: Any) -> np.ndarray:
    """Kendall-τ_j = τ(R_init,j, R_final,j) for every unit j (SPEC §3).

    ``r_init``, ``r_final``: score matrices [N images, J units] of the same image set
    under θ_init and θ_final. Returns float64 [J]. Tau-b as ``scipy.stats.kendalltau``:
    NaN for a unit constant on all images under either model (e.g. silent, all zero),
    NaN when the column holds a NaN, NaN for N = 1.
    """
    a = _score_matrix(r_init, "r_init")
    b = _score_matrix(r_final, "r_final")
    if a.shape != b.shape:
        raise ValueError(f"r_init {a.shape} and r_final {b.shape}: shapes differ")
    ra, rb = _rank_columns(a), _rank_columns(b)
    n, j = a.shape
    if n < 2:
        return np.full(j, np.nan)
    nd = np.empty(j, dtype=np.int64)
    n3 = np.empty(j, dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for s in range(0, j, rows):
        sl = slice(s, min(j, s + rows))
        nd[sl], n3[sl] = _discordant(ra.ranks[sl], ra.sorted[sl], rb.ranks[sl])
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


def _offdiag_max(m: np.ndarray) -> np.ndarray:
    """Row-wise nanmax over i ≠ j; NaN for a row without a non-NaN off-diagonal value."""
    m = np.array(m, dtype=np.float64, copy=True)
    np.fill_diagonal(m, np.nan)
    valid = ~np.isnan(m)
    filled = np.where(valid, m, -np.inf)
    mx = filled.max(axis=1)
    return np.where(valid.any(axis=1), mx, np.nan)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(den == 0, np.nan, r)


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
    (:mod:`fvaudit.engine.measure.kendall_w`: exact τ for about 1 % of the pairs, the same bits
    as the matrices would give). ``tau_init`` = ``kendall_tau_matrix(r_init)`` and
    ``tau_cross`` = ``kendall_tau_matrix(r_init, r_final)`` may be passed when a caller
    has them anyway; they are then used instead.
    """
    from fvaudit.engine import kendall_w as KW     # it builds on this module's kernels

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
            m = _to_numpy(given, name).astype(np.float64)
            if m.shape != (j, j):
                raise ValueError(f"{name}: expected shape {(j, j)}, got {m.shape}")
            mats[name] = m
    if not mats:
        return KW.tau_w_from_maxima(*KW.kendall_w_maxima(a, b, n_jobs=n_jobs))
    num = (_offdiag_max(mats["tau_cross"]) if "tau_cross" in mats
           else KW.kendall_row_top(a, b, n_jobs=n_jobs).max)
    den = (_offdiag_max(mats["tau_init"]) if "tau_init" in mats
           else KW.kendall_row_top(a, n_jobs=n_jobs).max)
    return _safe_ratio(num, den)


# --------------------------------------------------------------------------- CLIP

def _embedding_stack(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected top-k embeddings [J units, k images, E dims], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if 0 in arr.shape:
        raise ValueError(f"{name}: empty dimension in shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: holds NaN or infinite values")
    norms = np.linalg.norm(arr, axis=2, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name}: holds an all-zero embedding, which has no direction (cosine undefined)")
    return arr / norms


def _set_means(unit: np.ndarray) -> np.ndarray:
    """Mean embedding of each top-k set [J, E]. The k rows are summed in a canonical
    (lexicographic) order, so that the same set listed in another order gives the
    bit-identical mean (CLIP-δ of an unchanged top-k set is then exactly 0)."""
    j, k, _ = unit.shape
    if k > 1:
        order = np.argsort(unit[:, :, 0], axis=1, kind="stable")
        first = np.take_along_axis(unit[:, :, 0], order, axis=1)
        for u in np.flatnonzero((first[:, 1:] == first[:, :-1]).any(axis=1)):
            order[u] = np.lexsort(unit[u].T[::-1])     # tie in the first coordinate
        unit = np.take_along_axis(unit, order[:, :, None], axis=1)
    total = unit[:, 0, :].copy()
    for i in range(1, k):       # fixed summation order
        total += unit[:, i, :]
    return total / k


def _pair_similarity(emb_a: Any, emb_b: Any, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    ua = _embedding_stack(emb_a, name_a)
    ub = _embedding_stack(emb_b, name_b)
    if ua.shape[2] != ub.shape[2]:
        raise ValueError(f"{name_a} has embedding size {ua.shape[2]} but {name_b} has {ub.shape[2]}")
    return _set_means(ua), _set_means(ub)


def set_similarity(emb_a: Any, emb_b: Any) -> np.ndarray:
    """C(S_j, S'_p) for every pair of top-k sets (SPEC §3).

    ``emb_a`` [Ja, k, E], ``emb_b`` [Jb, k', E]: image embeddings of each unit's top-k.
    Rows are L2-normalised here, so entries are true cosines. Returns float64 [Ja, Jb]:
    entry [j, p] = mean over all k·k' ordered pairs (a ∈ S_j, b ∈ S'_p), self pairs
    included, of cos(e(a), e(b)) — equal to ⟨mean_a e(a), mean_b e(b)⟩.
    """
    ma, mb = _pair_similarity(emb_a, emb_b, "emb_a", "emb_b")
    return ma @ mb.T


def _clip_pair(emb_init: Any, emb_final: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mi, mf = _pair_similarity(emb_init, emb_final, "emb_init", "emb_final")
    if mi.shape[0] != mf.shape[0]:
        raise ValueError(f"emb_init has {mi.shape[0]} units but emb_final has {mf.shape[0]}")
    if mi.shape[0] < 2:
        raise ValueError(f"emb_init: needs at least 2 units (J ≥ 2) to compare against, got J = {mi.shape[0]}")
    return mi @ mi.T, mi @ mf.T, mi, mf


def clip_delta(emb_init: Any, emb_final: Any) -> np.ndarray:
    """CLIP-δ_j = (C^{ii}_{jj} − C^{if}_{jj}) / ((1/(J−1)) Σ_{p≠j} C^{ii}_{jp}) (SPEC §3).

    ``emb_init``, ``emb_final``: top-k embeddings [J, k, E] before / after the attack,
    J ≥ 2. Returns float64 [J]. The same top-k set before and after (in any order)
    gives exactly 0; higher = more semantic change. NaN where the denominator (mean
    similarity of unit j's set to the other units' sets) is exactly 0.
    """
    c_ii, _, mi, mf = _clip_pair(emb_init, emb_final)
    j = c_ii.shape[0]
    # C^{ii}_{jj} − C^{if}_{jj} = ⟨m_j, m_j − m'_j⟩: exactly 0 when the set is unchanged
    num = np.einsum("je,je->j", mi, mi - mf)
    off = (c_ii.sum(axis=1) - np.diagonal(c_ii)) / (j - 1)
    return _safe_ratio(num, off)


def clip_w(emb_init: Any, emb_final: Any) -> np.ndarray:
    """CLIP-W_j = max_{i≠j} C^{if}_{j,i} / max_{i≠j} C^{ii}_{j,i} (SPEC §3).

    ``emb_init``, ``emb_final``: top-k embeddings [J, k, E], J ≥ 2. Returns float64 [J];
    NaN where the denominator is exactly 0.
    """
    c_ii, c_if, _, _ = _clip_pair(emb_init, emb_final)
    return _safe_ratio(_offdiag_max(c_if), _offdiag_max(c_ii))


# --------------------------------------------------------------------------- others

def _id_matrix(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected image ids [J units, k], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: k = 0 (no ids per unit)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer image ids, got dtype {arr.dtype}")
    return arr


def topk_overlap(topk_init_ids: Any, topk_final_ids: Any) -> np.ndarray:
    """Top-k overlap_j = |T_j^init ∩ T_j^final| / k (SPEC §3).

    ``topk_init_ids``, ``topk_final_ids``: integer image ids [J, k] (distinct within a
    row). Returns float64 [J] in [0, 1]; 0 = every initial top-k image was replaced.
    """
    a = _id_matrix(topk_init_ids, "topk_init_ids")
    b = _id_matrix(topk_final_ids, "topk_final_ids")
    if a.shape != b.shape:
        raise ValueError(f"topk_init_ids {a.shape} and topk_final_ids {b.shape}: shapes differ")
    for name, arr in (("topk_init_ids", a), ("topk_final_ids", b)):
        s = np.sort(arr, axis=1)
        if (s[:, 1:] == s[:, :-1]).any():
            raise ValueError(f"{name}: a row repeats an image id; a top-k set holds distinct images")
    hits = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return hits / a.shape[1]


def accuracy(logits_or_preds: Any, labels: Any) -> float:
    """Top-1 accuracy in percent, 0..100 (SPEC §3).

    ``logits_or_preds``: logits [N, C] (the arg-max is the prediction; the first
    maximum on ties) or predicted labels [N]; ``labels``: true labels [N].
    """
    p = _to_numpy(logits_or_preds, "logits_or_preds")
    y = _to_numpy(labels, "labels")
    if p.ndim == 2:
        if p.shape[1] == 0:
            raise ValueError("logits_or_preds: logits with 0 classes")
        p = p.argmax(axis=1)
    elif p.ndim != 1:
        raise ValueError(f"logits_or_preds: expected logits [N, C] or labels [N], got shape {p.shape}")
    if y.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array [N], got shape {y.shape}")
    if p.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("logits_or_preds / labels: empty input (N = 0)")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"logits_or_preds has {p.shape[0]} rows but labels has {y.shape[0]}")
    return float(np.mean(p == y) * 100.0)


def nan_aggregate(values: Any) -> dict:
    """Mean over the defined values (SPEC §3 "Undefined values").

    Returns ``{"mean": float, "n": values used, "n_nan": NaN values skipped}``; ``mean``
    is NaN when no value is defined (empty input or all NaN). ``None`` counts as NaN.
    """
    arr = _to_numpy(values, "values")
    if arr.dtype == object:
        try:
            arr = np.array([np.nan if v is None else v for v in arr.ravel()], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("values: expected numbers (or None / NaN)") from None
    try:
        arr = arr.astype(np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"values: expected numbers, got dtype {arr.dtype}") from None
    nan = np.isnan(arr)
    used = arr[~nan]
    mean = float(used.mean()) if used.size else float("nan")
    return {"mean": mean, "n": int(used.size), "n_nan": int(nan.sum())}


def pushup_success(topk_ids: Any, image_labels: Any, decoy_class: int,
                   decoy_ids: Sequence[int] | np.ndarray | None = None) -> dict:
    """Push-up success on one image set (SPEC §3; thesis App. D).

    ``topk_ids`` [J, k]: the final top-k image ids of the attacked units;
    ``image_labels``: class label of every image, a 1-D array indexed by image id (a
    mapping id -> label is accepted too); ``decoy_class``: the decoy class;
    ``decoy_ids``: the D_decoy image ids (training set), or None.

    Returns ``share_units_with_decoy_class`` (share of units whose top-k holds ≥ 1 image
    of the decoy class), ``mean_decoy_class_share`` (over those units, the mean share of
    decoy-class images in the top-k; NaN if there is no such unit) and
    ``share_units_with_decoy_images`` (share of units whose top-k holds one of
    ``decoy_ids``; None when ``decoy_ids`` is None).
    """
    ids = _id_matrix(topk_ids, "topk_ids")
    if ids.shape[0] == 0:
        raise ValueError("topk_ids: no units (J = 0)")
    if isinstance(image_labels, Mapping):
        try:
            labels_topk = np.array([[image_labels[int(i)] for i in r] for r in ids])
        except KeyError as exc:
            raise ValueError(f"image_labels: no label for image id {exc.args[0]}") from None
    else:
        labels = _to_numpy(image_labels, "image_labels")
        if labels.ndim != 1:
            raise ValueError(f"image_labels: expected a 1-D array indexed by image id, got shape {labels.shape}")
        if ids.min() < 0 or ids.max() >= labels.shape[0]:
            raise ValueError(f"topk_ids: ids must lie in [0, {labels.shape[0]}) (the length of image_labels), "
                             f"got range [{ids.min()}, {ids.max()}]")
        labels_topk = labels[ids]
    try:
        decoy = int(decoy_class)
    except (TypeError, ValueError):
        raise ValueError(f"decoy_class: expected an integer class, got {decoy_class!r}") from None
    is_decoy = labels_topk == decoy
    has = is_decoy.any(axis=1)
    share_units = float(has.mean())
    mean_share = float(is_decoy[has].mean(axis=1).mean()) if has.any() else float("nan")
    share_images = None
    if decoy_ids is not None:
        d = _to_numpy(decoy_ids, "decoy_ids").ravel()
        if d.size and not np.issubdtype(d.dtype, np.integer):
            raise ValueError(f"decoy_ids: expected integer image ids, got dtype {d.dtype}")
        share_images = float(np.isin(ids, d).any(axis=1).mean())
    return {
        "share_units_with_decoy_class": share_units,
        "mean_decoy_class_share": mean_share,
        "share_units_with_decoy_images": share_images,
    }
