"""The largest Kendall-τ of every row, by bound-and-prune (SPEC §3, Kendall-τ-W).

Kendall-τ-W_j = max_{i≠j} τ(R_init,j, R_final,i) / max_{i≠j} τ(R_init,j, R_init,i) needs
only the largest τ of each row of two J × J matrices, not the matrices themselves.
:func:`kendall_row_top` finds the ``k`` largest entries of every row exactly (k = 1 for
τ-W; the report's "nearest units" view uses k = 3) and computes the exact τ of only a
few pairs (under 1 % at J = 256):

1. **Buckets.** Every column is cut into at most ``B`` buckets by value: a function of
   its dense rank, so monotone and never splitting a tie group. A column with at most
   ``B`` distinct values gets one bucket per value; a large minimum tie group (the zeros
   of ReLU scores) gets a bucket of its own; the rest are equal quantiles.
2. **Bound.** τ-b's numerator (scipy's, as in :mod:`fvaudit.engine.measure.metrics`) is
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
   largest. At J = 256, N = 10 000 (``bench/kendall_w.py``) the exact τ runs on 0.6 % of
   the pairs and the fine bound on 5 %. The exact kernel is ``metrics._discordant``'s
   (sort the (x, y) keys, count inversions by sorting), batched over pairs from
   different rows (:func:`_discordant_pairs`); a matrix against itself computes each
   unordered pair once.

Measured (``bench/results/kendall_w.json``, 2 shared cores under load): about 30× the
full-matrix path and far beyond the 80× goal over the scipy loop at J = 256,
N = 10 000. Where nothing can be pruned (units unrelated to each other, every τ near 0)
nearly every pair needs its exact τ and the bounds are overhead: measured within about
1.2× of the full-matrix path.

Values come from the same integer counts through ``metrics._tau_from_counts``, so they
equal ``kendall_tau_matrix`` bit for bit (and scipy's ``kendalltau``, which does the same
arithmetic on the same counts). NaN (a column holding NaN: scipy's
``nan_policy='propagate'``) and constant columns give undefined τ, skipped as ``nanmax``
skips them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fvaudit.engine.measure import metrics as M

__all__ = ["RowTop", "kendall_row_top", "kendall_w_maxima", "tau_w_from_maxima", "tau_upper_bound"]

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

    r: M._Ranked
    coarse: np.ndarray        # [J, N] uint8 coarse bucket
    coarse_same: np.ndarray   # [J] int64 pairs sharing a coarse bucket
    fine: np.ndarray          # [J, N] uint8 fine bucket
    fine_same: np.ndarray
    valid: np.ndarray         # [J] bool: τ with this column is defined (no NaN, not constant)

    @classmethod
    def of(cls, arr: np.ndarray, coarse: int, fine: int) -> "_Side":
        r = M._rank_columns(arr)
        tot = r.n * (r.n - 1) // 2
        cb, cs = _buckets(r, coarse)
        fb, fs = _buckets(r, fine)
        return cls(r, cb, cs, fb, fs, ~r.nan & (r.ties < tot))


def _buckets(r: M._Ranked, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
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
    # metrics._tau_from_counts computes (tot − n1 − n2 + n3 − 2·nd): n3 chosen so that equals s_max
    return M._tau_from_counts(tot, n1, n2, np.zeros_like(s_max), s_max - (tot - n1 - n2))


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


def _discordant_pairs(ra: M._Ranked, rb: M._Ranked, js: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discordant pairs nd and joint ties n3 of (a_js[p], b_cols[p]) for every p: the
    counts ``metrics._discordant`` gives, for pairs of different x columns in one batch.

    As there, the images of x's minimum tie group A (per pair: its first a_p positions
    in (x, y) order) are left out of the inversion search and their pairs with the rest
    counted in closed form; the remaining y sequences are left-aligned and padded with
    the sentinel N, which is never part of an inversion.
    """
    n = ra.n
    m = cols.size
    dt = M._key_dtype(n)
    xr = ra.ranks[js]
    key = xr.astype(dt) * n
    key += rb.ranks[cols].astype(dt, copy=False)
    key.sort(axis=1)
    n3 = M._tied_pairs(key)
    a = np.count_nonzero(ra.sorted[js] == 0, axis=1)                   # |A| per pair, ≥ 1
    y_below = np.einsum("pn,pn->p", (xr == 0).astype(np.int32), rb.below[cols].astype(np.int32, copy=False),
                        dtype=np.int64)
    # joint ties inside A: the first a_p keys (sorted), later positions made distinct and larger
    amax = int(a.max())
    head = key[:, :amax].astype(np.int64)
    pos = np.arange(amax)
    head = np.where(pos[None, :] < a[:, None], head, np.int64(n) * n + pos[None, :])
    tied_in_a = M._tied_pairs(head)
    key -= ra.sorted[js].astype(dt) * n                                # rank(y) in (x, y) order
    width = n - int(a.min())
    idx = a[:, None] + np.arange(width)[None, :]
    y = np.take_along_axis(key, np.minimum(idx, n - 1), axis=1)
    y[idx >= n] = n
    nd = M._inversions(y, n)
    nd += y_below - a.astype(np.int64) * (a - 1) // 2 + tied_in_a
    return nd, n3


# a row with at least this many pairs in one batch uses the shared-x kernel (one x column
# against many y columns: the keys need no per-pair x copy, as in kendall_tau_matrix)
_SHARED_X_PAIRS = 12


def _discordant_grouped(ra: M._Ranked, rb: M._Ranked, js: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """nd and n3 for the pairs (js[p], cols[p]): rows with many pairs through
    ``metrics._discordant`` (shared x), the rest together through :func:`_discordant_pairs`."""
    nd = np.empty(cols.size, dtype=np.int64)
    n3 = np.empty(cols.size, dtype=np.int64)
    rows, inverse, counts = np.unique(js, return_inverse=True, return_counts=True)
    many = counts[inverse] >= _SHARED_X_PAIRS
    for r in rows[counts >= _SHARED_X_PAIRS]:
        sel = np.flatnonzero(js == r)
        c = cols[sel]
        y_below = rb.below[c][:, ra.ranks[r] == 0].sum(axis=1, dtype=np.int64)
        nd[sel], n3[sel] = M._discordant(ra.ranks[r:r + 1], ra.sorted[r:r + 1], rb.ranks[c],
                                         joint_ties=bool(ra.ties[r] > 0), y_below=y_below)
    rest = np.flatnonzero(~many)
    if rest.size:
        nd[rest], n3[rest] = _discordant_pairs(ra, rb, js[rest], cols[rest])
    return nd, n3


def _exact(sa: _Side, sb: _Side, js: np.ndarray, cols: np.ndarray, both: bool = False) -> np.ndarray:
    """Exact τ(a_js[p], b_cols[p]): the integer counts of kendall_tau_matrix's kernel,
    through its arithmetic (``metrics._tau_from_counts``), hence the same bits. ``both``
    (a matrix against itself): also τ(a_i, a_j) from the same symmetric counts, [2, m]."""
    nd, n3 = _discordant_grouped(sa.r, sb.r, js, cols)
    n = sa.r.n
    fwd = M._tau_from_counts(n * (n - 1) // 2, sa.r.ties[js], sb.r.ties[cols], nd, n3)
    if not both:
        return fwd
    return np.stack([fwd, M._tau_from_counts(n * (n - 1) // 2, sb.r.ties[cols], sa.r.ties[js], nd, n3)])


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

    M._map_rows(run, len(parts), workers)
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
    workers = M._n_jobs(n_jobs)
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
    A = M._score_matrix(a, "a")
    B = A if b is None else M._score_matrix(b, "b")
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
    a = M._score_matrix(r_init, "r_init")
    b = M._score_matrix(r_final, "r_final")
    if a.shape != b.shape:
        raise ValueError(f"r_init {a.shape} and r_final {b.shape}: shapes differ")
    sides: list = [a, b]

    def prepare(i: int) -> None:
        sides[i] = _Side.of(sides[i], COARSE_BUCKETS, FINE_BUCKETS)

    M._map_rows(prepare, 2, min(2, M._n_jobs(n_jobs)))
    sa, sb = sides
    return _top(sa, sb, k, True, n_jobs), _top(sa, sa, k, True, n_jobs)


def tau_w_from_maxima(cross: RowTop, same: RowTop) -> np.ndarray:
    """Kendall-τ-W [J] from :func:`kendall_w_maxima`'s two results (SPEC §3): NaN where
    either maximum is undefined or the denominator is exactly 0."""
    return M._safe_ratio(cross.max, same.max)


def tau_upper_bound(a, b=None, *, n_buckets: int = COARSE_BUCKETS, fine: bool = False) -> np.ndarray:
    """The upper bound on ``kendall_tau_matrix(a, b)`` that prunes pairs, for every pair
    [Ja, Jb] (NaN where τ is undefined): the coarse path (one int8 product) or, with
    ``fine``, the per-row histogram path. For tests and the benchmark."""
    if not 2 <= n_buckets <= 255:      # uint8 buckets; fine cells x·B + y fit uint16
        raise ValueError(f"n_buckets: must lie in [2, 255], got {n_buckets}")
    A = M._score_matrix(a, "a")
    B = A if b is None else M._score_matrix(b, "b")
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
