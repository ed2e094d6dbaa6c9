"""What an interpreter would conclude about a unit (issue 22): its label, whether an attack
changed it, and how clear, polysemantic or redundant its dataset examples are.

* **Class-concept label** (works offline, on any labelled image set; NetDissect-like on
  ImageNet's 1000 classes): the class most over-represented in a unit's top-k against the
  set's class frequencies. Drawing the k top images from N images of which K_c are of class
  c, the enrichment p-value of seeing at least the observed count x_c is the hypergeometric
  tail ``P(X ≥ x_c) = hypergeom.sf(x_c − 1, N, K_c, k)`` (scipy's). The label is the class
  with the smallest p-value (ties: the larger count, then the lower class index), reported
  with its share x_c / k. A dead unit (SPEC §1) has no label.
* **Label flip rate**: the share of units whose label differs between two states (θ_init and
  the attack's), and for a push-up the share now labelled with the decoy class: the number
  that says the interpreter would now conclude something else.
* **SemanticLens scores** (Dreyer et al. 2025) on a unit's top-k embeddings (unit-normalised
  rows ``v̂``): *clarity* ``(‖mean v̂‖² − 1/n)·n/(n − 1)`` (1 = every example the same concept,
  about 0 = unrelated examples); *polysemanticity* ``1 − clarity`` of the two centroids of a
  2-means split of the examples (= 1 − their cosine); *redundancy* the largest cosine between
  the unit's mean embedding and another unit's. They are as good as the embedder: the offline
  stand-in is not CLIP, and results say which embedder made them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.stats import hypergeom

from fvaudit.engine.measure.arrays import as_numpy

__all__ = ["UnitLabel", "class_concept_labels", "label_flip_rate", "clarity", "polysemanticity", "redundancy"]


@dataclass(frozen=True)
class UnitLabel:
    """A unit's class-concept label: the class index and name, its share of the top-k and its
    enrichment p-value; ``label`` None for a dead unit."""

    unit: int
    label: int | None
    name: str | None = None
    share: float | None = None
    p_value: float | None = None

    def to_json(self) -> dict:
        return {"label": self.label, "name": self.name, "share": self.share, "p_value": self.p_value}


def class_concept_labels(topk_ids: Any, image_labels: Any, class_names: Sequence[str] | None = None,
                         units: Sequence[int] | None = None, dead: Sequence[int] = ()) -> list[UnitLabel]:
    """The class-concept label of each unit from its top-k image ids [J, k] and the image set's
    labels [N] (``units``: which rows, default all; ``dead``: units without a label)."""
    ids = as_numpy(topk_ids, "topk_ids")
    labels = as_numpy(image_labels, "image_labels").astype(np.int64)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"topk_ids: expected [J units, k ≥ 1] image ids, got shape {ids.shape}")
    if labels.ndim != 1 or len(labels) == 0 or labels.min() < 0:
        raise ValueError("image_labels: expected one non-negative class index per image")
    if ids.min() < 0 or ids.max() >= len(labels):
        raise ValueError(f"topk_ids: ids must lie in 0..{len(labels) - 1} (the image set's ids)")
    n_classes = max(int(labels.max()) + 1, len(class_names or ()))
    n_images, k = len(labels), ids.shape[1]
    per_class = np.bincount(labels, minlength=n_classes)                       # K_c
    rows = np.arange(ids.shape[0]) if units is None else np.asarray([int(u) for u in units], dtype=np.int64)
    # counts[j, c] = x_c of unit j: one bincount over (row, class) pairs; one tail call for all units
    cls = labels[ids[rows]]
    counts = np.bincount((np.arange(len(rows))[:, None] * n_classes + cls).ravel(),
                         minlength=len(rows) * n_classes).reshape(len(rows), n_classes)
    p = np.where(counts > 0, hypergeom.sf(counts - 1, n_images, per_class[None, :], k), 1.0)
    dead_set = {int(u) for u in dead}
    out = []
    for r, u in enumerate(rows.tolist()):
        if u in dead_set:
            out.append(UnitLabel(u, None))
            continue
        # smallest p-value; ties: the larger count, then the lower class index
        best = int(np.lexsort((np.arange(n_classes), -counts[r], p[r]))[0])
        out.append(UnitLabel(u, best, class_names[best] if class_names and best < len(class_names) else str(best),
                             float(counts[r, best] / k), float(p[r, best])))
    return out


def label_flip_rate(before: Sequence[UnitLabel], after: Sequence[UnitLabel],
                    decoy_class: int | None = None) -> dict:
    """Between two states of the same units: the share whose label changed (``flip_rate``,
    over the units labelled in both), and with ``decoy_class`` the share labelled with it
    after and before (``decoy_rate``, ``decoy_rate_before``). None where no unit counts."""
    by_unit = {b.unit: b for b in before}
    pairs = [(by_unit[a.unit], a) for a in after if a.unit in by_unit
             and by_unit[a.unit].label is not None and a.label is not None]
    n = len(pairs)
    out: dict = {"n_units": n, "flipped": sum(b.label != a.label for b, a in pairs)}
    out["flip_rate"] = out["flipped"] / n if n else None
    if decoy_class is not None:
        out["decoy_class"] = int(decoy_class)
        out["decoy_rate"] = sum(a.label == decoy_class for _, a in pairs) / n if n else None
        out["decoy_rate_before"] = sum(b.label == decoy_class for b, _ in pairs) / n if n else None
    return out


def _unit_rows(emb: Any, name: str) -> np.ndarray:
    """Embeddings [J, n, D] (or [n, D] for one unit) with unit-normalised rows, float64."""
    e = as_numpy(emb, name).astype(np.float64)
    if e.ndim == 2:
        e = e[None]
    if e.ndim != 3 or e.shape[1] < 2 or e.shape[2] == 0:
        raise ValueError(f"{name}: expected [J units, n ≥ 2 examples, D] embeddings, got shape {e.shape}")
    norms = np.linalg.norm(e, axis=-1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(e)):
        raise ValueError(f"{name}: every embedding must be finite and non-zero")
    return e / norms


def _clarity_of(v: np.ndarray) -> np.ndarray:
    n = v.shape[-2]
    m = v.mean(axis=-2)
    return ((m * m).sum(axis=-1) - 1.0 / n) * n / (n - 1)


def clarity(emb: Any) -> np.ndarray:
    """SemanticLens clarity of each unit's top-k embeddings [J, n, D] → [J]."""
    return _clarity_of(_unit_rows(emb, "emb"))


def _two_means(v: np.ndarray, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 2-means of unit rows [n, D] (cosine geometry): the two centroids, normalised.
    Started from the example farthest from the mean and the one farthest from that."""
    m = v.mean(axis=0)
    a = int(np.argmin(v @ m))
    b = int(np.argmin(v @ v[a]))
    c = np.stack([v[a], v[b]])
    for _ in range(iters):
        assign = np.argmax(v @ c.T, axis=1)
        new = np.stack([v[assign == i].mean(axis=0) if np.any(assign == i) else c[i] for i in (0, 1)])
        new /= np.linalg.norm(new, axis=1, keepdims=True).clip(min=1e-12)
        if np.allclose(new, c):
            break
        c = new
    return c[0], c[1]


def polysemanticity(emb: Any) -> np.ndarray:
    """SemanticLens polysemanticity: 1 − clarity of the two centroids of a 2-means split of each
    unit's examples (= 1 − their cosine) → [J]; 0 when the examples are one concept."""
    v = _unit_rows(emb, "emb")
    out = np.empty(v.shape[0])
    for j in range(v.shape[0]):
        c0, c1 = _two_means(v[j])
        out[j] = 1.0 - float(_clarity_of(np.stack([c0, c1])))
    return out


def redundancy(emb: Any) -> np.ndarray:
    """SemanticLens redundancy: the largest cosine between a unit's mean embedding and another
    unit's → [J] (NaN for a single unit)."""
    v = _unit_rows(emb, "emb")
    means = v.mean(axis=1)
    means /= np.linalg.norm(means, axis=1, keepdims=True).clip(min=1e-12)
    if len(means) < 2:
        return np.full(len(means), np.nan)
    sim = means @ means.T
    np.fill_diagonal(sim, -np.inf)
    return sim.max(axis=1)
