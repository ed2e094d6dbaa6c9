"""CLIP measures (SPEC §3): CLIP-δ and CLIP-W compare what a unit's top-k images show
before and after, as mean embeddings of the two sets, so that a top-k replaced by images
of the same concept still counts as unchanged."""
from __future__ import annotations

from typing import Any

import numpy as np

from fvaudit.engine.measure.arrays import as_numpy, offdiag_max, safe_ratio

__all__ = ["set_similarity", "clip_delta", "clip_w"]


def _embedding_stack(x: Any, name: str) -> np.ndarray:
    arr = as_numpy(x, name)
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
    return safe_ratio(num, off)


def clip_w(emb_init: Any, emb_final: Any) -> np.ndarray:
    """CLIP-W_j = max_{i≠j} C^{if}_{j,i} / max_{i≠j} C^{ii}_{j,i} (SPEC §3).

    ``emb_init``, ``emb_final``: top-k embeddings [J, k, E], J ≥ 2. Returns float64 [J];
    NaN where the denominator is exactly 0.
    """
    c_ii, c_if, _, _ = _clip_pair(emb_init, emb_final)
    return safe_ratio(offdiag_max(c_if), offdiag_max(c_ii))
