"""CLIP-Dissect unit labels (Oikarinen & Weng, ICLR 2023; issue 22): name each unit by the
concept whose CLIP image–text similarity best follows the unit's activations over a probe set.

The second describer beside :func:`fvaudit.engine.measure.labels.class_concept_labels`: the
class-concept labeller can only say class names of a labelled set; CLIP-Dissect can say any
word of a vocabulary (ImageNet's class names plus a shipped list of common visual words), on any
image set, labelled or not. It needs a *real* CLIP, image and text towers: offline, with the
EfficientNet stand-in embedder (no text tower), it says so (:class:`ClipDissectUnavailable`) and
gives no label, never a fake one.

The score is the paper's *soft-WPMI* (:func:`soft_wpmi`), over the probe images' concept
probabilities ``p(t | x) = softmax_t(a · sim(x, t))``:

* a unit's top-``top_k`` images by activation, the r-th (0-based) kept in its "concept set"
  with probability ``p_r = p_start − r/top_k · (p_start − p_end)`` (the top image is almost
  surely in, the last a little less);
* ``log p(t | unit) = Σ_r log(1 − p_r + p_r · p(t | x_r) + min_prob)``: how likely every image
  of the soft set shows concept t;
* ``log p(t) = log mean_j exp(log p(t | unit j))``, over the layer's units;
* ``soft-WPMI(j, t) = log p(t | unit j) − λ · log p(t)``: a concept every unit shows (a common
  background) is discounted. The label is the argmax concept, its score the maximum.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import logsumexp, softmax

from fvaudit.engine.measure.arrays import as_numpy

__all__ = ["soft_wpmi", "ClipDissectLabel", "ClipDissectUnavailable", "unavailable_reason", "concept_vocabulary",
           "clip_dissect_labels", "labels_from_similarity", "COMMON_WORDS_FILE"]

#: the shipped common visual words (one per line) added to a set's class names
COMMON_WORDS_FILE = Path(__file__).with_name("concepts_common.txt")


class ClipDissectUnavailable(RuntimeError):
    """CLIP-Dissect cannot run here (why): it needs a real CLIP with a text tower."""


@dataclass(frozen=True)
class ClipDissectLabel:
    unit: int
    concept: str | None        # None: a dead unit (SPEC §1) has no label
    score: float | None        # its soft-WPMI

    def to_json(self) -> dict:
        return {"concept": self.concept, "score": self.score}


def soft_wpmi(similarity: Any, activations: Any, *, top_k: int = 100, a: float = 10.0, lam: float = 1.0,
              p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7) -> np.ndarray:
    """Soft-WPMI [J, M] of every unit j and concept t (module docstring).

    ``similarity`` [N, M]: CLIP cosine of each probe image with each concept's text;
    ``activations`` [N, J]: each unit's score on each probe image (SPEC §1). ``top_k`` is capped
    at N. Float64 throughout.
    """
    sim = np.asarray(as_numpy(similarity, "similarity"), dtype=np.float64)
    act = np.asarray(as_numpy(activations, "activations"), dtype=np.float64)
    if sim.ndim != 2 or act.ndim != 2 or sim.shape[0] != act.shape[0] or 0 in sim.shape or 0 in act.shape:
        raise ValueError(f"similarity [N, M] and activations [N, J] must share N ≥ 1, got {sim.shape} and {act.shape}")
    if not (np.isfinite(sim).all() and np.isfinite(act).all()):
        raise ValueError("similarity / activations: hold NaN or infinite values")
    if not 0.0 <= p_end <= p_start <= 1.0:
        raise ValueError(f"p_start / p_end: need 0 ≤ p_end ≤ p_start ≤ 1, got {p_start} / {p_end}")
    k = min(int(top_k), sim.shape[0])
    if k < 1:
        raise ValueError(f"top_k: must be ≥ 1, got {top_k}")
    p_t_given_x = softmax(a * sim, axis=1)                               # [N, M]
    top = np.argsort(-act, axis=0, kind="stable")[:k]                    # [k, J] image indices, best first
    p_in = p_start - np.arange(k) / k * (p_start - p_end)                # [k]
    p = p_t_given_x[top]                                                 # [k, J, M]
    log_given_unit = np.log(1.0 - p_in[:, None, None] + p_in[:, None, None] * p + min_prob).sum(axis=0)  # [J, M]
    log_prior = logsumexp(log_given_unit, axis=0) - np.log(log_given_unit.shape[0])                     # [M]
    return log_given_unit - lam * log_prior[None, :]


def unavailable_reason(embedder: Any) -> str | None:
    """Why ``embedder`` cannot run CLIP-Dissect, or None when it can (a real CLIP with a text tower)."""
    if embedder is None:
        return "CLIP-Dissect needs a CLIP embedder; none was given"
    if not getattr(embedder, "is_clip", False):
        return (f"CLIP-Dissect needs a real CLIP (image and text towers); the embedder in use is "
                f"{getattr(embedder, 'description', None) or getattr(embedder, 'id', 'unknown')}, which has no text "
                "tower (offline, CLIP's weights cannot be downloaded): no CLIP-Dissect label is given")
    if not callable(getattr(embedder, "embed_text", None)):
        return f"CLIP-Dissect needs the embedder's text tower; {getattr(embedder, 'id', 'this embedder')} has none"
    return None


def concept_vocabulary(class_names: Sequence[str] = (), extra: Sequence[str] | None = None) -> list[str]:
    """The concepts to name units with: the set's class names, then the shipped common visual words
    (``extra`` instead of them when given), lower-cased and de-duplicated, in that order."""
    words = list(extra) if extra is not None else [w.strip() for w in COMMON_WORDS_FILE.read_text().splitlines()
                                                   if w.strip() and not w.startswith("#")]
    out, seen = [], set()
    for w in list(class_names) + words:
        key = w.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(w.strip())
    return out


def labels_from_similarity(similarity: Any, activations: Any, concepts: Sequence[str], *, dead: Sequence[int] = (),
                           top_k: int = 100) -> list[ClipDissectLabel]:
    """Every unit's label from the probe images' CLIP cosines with the concepts [N, M] and the
    units' activations [N, J] (:func:`soft_wpmi`): the argmax concept and its score; None for dead units."""
    if len(concepts) != np.asarray(similarity).shape[1]:
        raise ValueError(f"concepts: {len(concepts)} names for {np.asarray(similarity).shape[1]} similarity columns")
    score = soft_wpmi(similarity, activations, top_k=top_k)
    dead_set = set(int(d) for d in dead)
    best = score.argmax(axis=1)
    return [ClipDissectLabel(j, None, None) if j in dead_set else
            ClipDissectLabel(j, concepts[int(best[j])], float(score[j, best[j]])) for j in range(score.shape[0])]


def clip_dissect_labels(embedder: Any, activations: Any, probe_images: Sequence[Any] | Callable[[], Sequence[Any]],
                        concepts: Sequence[str], *, dead: Sequence[int] = (), top_k: int = 100,
                        template: str = "{}") -> list[ClipDissectLabel]:
    """Every unit's CLIP-Dissect label: the probe images and the concepts embedded by ``embedder``
    (a real CLIP: :func:`unavailable_reason` must be None, else :class:`ClipDissectUnavailable`),
    their cosines scored by :func:`soft_wpmi` against ``activations`` [N, J]. Dead units get None."""
    why = unavailable_reason(embedder)
    if why is not None:
        raise ClipDissectUnavailable(why)
    if not concepts:
        raise ValueError("concepts: the vocabulary is empty")
    images = probe_images() if callable(probe_images) else probe_images
    img = np.asarray(embedder.embed(list(images)), dtype=np.float64)
    txt = np.asarray(embedder.embed_text([template.format(c) for c in concepts]), dtype=np.float64)
    return labels_from_similarity(img @ txt.T, activations, concepts, dead=dead, top_k=top_k)
