"""Measures of a synthetic-visualization manipulation (SPEC §8.1): how close a unit's feature
visualization came to the attacker's target, whether the unit still does its job on natural
images, and whether the two views of the unit (natural exemplars, synthetic image) agree.

* :func:`ssim`: structural similarity (Wang et al. 2004: Gaussian window σ 1.5 truncated at
  3.5σ, K1 0.01, K2 0.03, data range 1), the pixel-space measure the paper reports;
* :func:`pixel_mse`;
* :func:`auroc`: the unit's scores as a detector of a class (Mann–Whitney U / n⁺n⁻, ties ½);
* :func:`toward_target`: per unit, is the FV after the attack closer to the target than to the
  unit's original FV (the issue's "moved" criterion), on any similarity;
* :func:`cross_check`: the Slingshots paper's own defence read on the measures: exemplars and
  FV "agree" when the unit's natural top-k is closer to its own synthetic images than to other
  units' (SPEC §4 natural–synthetic agreement > 1).

Pure NumPy/SciPy: no model, no torch; the job and the bench feed them arrays.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage, stats

SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_chw(a: np.ndarray) -> np.ndarray:
    """[H, W] → [1, H, W]; [H, W, C] uint8 (the stored form) or [C, H, W] float → float [C, H, W] in [0, 1]."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
        if a.ndim == 3:
            a = a.transpose(2, 0, 1)
    a = a.astype(np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected an image [H, W], [H, W, C] uint8 or [C, H, W], got shape {a.shape}")
    return a


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two images (channels averaged), Gaussian-weighted local statistics
    (Wang et al. 2004; scikit-image's ``gaussian_weights=True`` convention, population variances)."""
    x, y = _as_chw(a), _as_chw(b)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {x.shape} vs {y.shape}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def blur(v):
        return ndimage.gaussian_filter(v, sigma=SSIM_SIGMA, truncate=3.5, mode="reflect")

    vals = []
    for xc, yc in zip(x, y):
        mx, my = blur(xc), blur(yc)
        sxx = blur(xc * xc) - mx * mx
        syy = blur(yc * yc) - my * my
        sxy = blur(xc * yc) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def pixel_mse(a: np.ndarray, b: np.ndarray) -> float:
    x, y = _as_chw(a), _as_chw(b)
    if x.shape != y.shape:
        raise ValueError(f"pixel_mse: shapes differ {x.shape} vs {y.shape}")
    return float(np.mean((x - y) ** 2))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, D] arrays (embeddings)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive``: the probability that a
    positive outscores a negative, ties counting ½ (Mann–Whitney U / (n⁺·n⁻)); NaN if a side is empty."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def unit_class_auroc(scores: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``[J]``: unit j's scores over a labelled set (``scores`` [N, J]) as a detector of class ``classes[j]``
    (its top class: "the unit still does its job", SPEC §8.1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    return np.array([auroc(scores[:, j], labels == c) for j, c in enumerate(classes)])


def top_class(topk_labels: np.ndarray) -> np.ndarray:
    """``[J]``: the most frequent class of each unit's top-k labels (``[J, k]``), ties to the smaller class."""
    out = []
    for row in np.asarray(topk_labels):
        vals, counts = np.unique(row[row >= 0], return_counts=True)
        out.append(int(vals[np.argmax(counts)]) if len(vals) else -1)
    return np.array(out)


def toward_target(to_target_after: np.ndarray, to_original_after: np.ndarray) -> np.ndarray:
    """``[U]`` bool: the FV after the attack is more similar to the target than to the unit's
    original FV (both similarities of the same kind, larger = closer)."""
    return np.asarray(to_target_after) > np.asarray(to_original_after)


def cross_check(agreement: float | np.ndarray) -> np.ndarray | str:
    """"agree" when natural–synthetic agreement (SPEC §4) exceeds 1 (a unit's exemplars are
    closer to its own synthetic images than to other units'), else "disagree"."""
    a = np.asarray(agreement, dtype=np.float64)
    out = np.where(np.isnan(a), "unknown", np.where(a > 1.0, "agree", "disagree"))
    return str(out) if out.ndim == 0 else out
