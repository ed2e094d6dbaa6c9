"""Count-based measures (SPEC §3): top-k overlap, push-up success, accuracy, and the
NaN-aware aggregate every table row uses (dead units give NaN, never a fake 0)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fvaudit.engine.measure.arrays import as_numpy

__all__ = ["topk_overlap", "accuracy", "nan_aggregate", "pushup_success"]


def _id_matrix(x: Any, name: str) -> np.ndarray:
    arr = as_numpy(x, name)
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
    p = as_numpy(logits_or_preds, "logits_or_preds")
    y = as_numpy(labels, "labels")
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
    arr = as_numpy(values, "values")
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
        labels = as_numpy(image_labels, "image_labels")
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
        d = as_numpy(decoy_ids, "decoy_ids").ravel()
        if d.size and not np.issubdtype(d.dtype, np.integer):
            raise ValueError(f"decoy_ids: expected integer image ids, got dtype {d.dtype}")
        share_images = float(np.isin(ids, d).any(axis=1).mean())
    return {
        "share_units_with_decoy_class": share_units,
        "mean_decoy_class_share": mean_share,
        "share_units_with_decoy_images": share_images,
    }
