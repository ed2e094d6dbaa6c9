"""Input checks and small array helpers shared by the measures (Kendall, CLIP, top-k):
every measure accepts numpy arrays or torch tensors and names the argument it rejects."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_numpy", "offdiag_max", "safe_ratio"]


def as_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None


def offdiag_max(m: np.ndarray) -> np.ndarray:
    """Row-wise nanmax over i ≠ j; NaN for a row without a non-NaN off-diagonal value."""
    m = np.array(m, dtype=np.float64, copy=True)
    np.fill_diagonal(m, np.nan)
    valid = ~np.isnan(m)
    filled = np.where(valid, m, -np.inf)
    mx = filled.max(axis=1)
    return np.where(valid.any(axis=1), mx, np.nan)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise; NaN where den is 0 (no division warnings)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(den == 0, np.nan, r)
