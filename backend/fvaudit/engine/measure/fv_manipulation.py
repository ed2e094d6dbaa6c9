"""The measures of a synthetic-visualization manipulation (SPEC §8.1) for the attacked units of one
layer: the units' feature visualizations rendered under θ_init and under the manipulated weights
with seeds the attack never saw, compared with the attacker's targets and with each other, and
the units' behaviour on natural images before and after.

Used by the attack job, ``fvaudit attack --kind slingshot`` and ``bench/slingshot.py``; the pure
pieces are in :mod:`fvaudit.engine.measure.fv_target`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from fvaudit.engine.measure.fv_target import (auroc, cosine, cross_check, pixel_mse, ssim, toward_target,
                                              top_class)
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.synthesis.config import SynthesisConfig

#: render seeds of the measurement: the attack samples its tunnel from its own generator and never
#: renders, so any fixed seeds are "fresh"; these are not the synthesis job's default seeds either
MEASURE_SEEDS = (9101, 9102)


@dataclass
class FVManipulation:
    """Per attacked unit (arrays of length U) and their aggregates (medians and shares)."""

    layer: str
    units: list[int]
    seeds: list[int]
    ssim_target_after: np.ndarray
    ssim_target_before: np.ndarray
    ssim_original_after: np.ndarray          # FV after vs the unit's original FV (same seed)
    mse_target_after: np.ndarray
    mse_target_before: np.ndarray
    cos_target_after: np.ndarray | None       # embedder cosines (None without an embedder)
    cos_target_before: np.ndarray | None
    cos_original_after: np.ndarray | None
    moved: np.ndarray                         # FV after closer to the target than to the original FV
    moved_by: str                             # the similarity ``moved`` was decided on
    auroc_before: np.ndarray | None = None    # the unit as a detector of its top class, validation set
    auroc_after: np.ndarray | None = None
    top_classes: np.ndarray | None = None
    agreement_before: np.ndarray | None = None  # natural–synthetic agreement (SPEC §4) among the attacked units
    agreement_after: np.ndarray | None = None
    images_before: np.ndarray | None = field(default=None, repr=False)   # [S, U, H, W, C] uint8
    images_after: np.ndarray | None = field(default=None, repr=False)
    targets: np.ndarray | None = field(default=None, repr=False)         # [U, H, W, C] uint8

    #: the per-unit arrays, in the order they are reported
    MEASURES = ("ssim_target_after", "ssim_target_before", "ssim_original_after", "mse_target_after",
                "mse_target_before", "cos_target_after", "cos_target_before", "cos_original_after",
                "auroc_before", "auroc_after", "agreement_before", "agreement_after")

    def aggregates(self) -> dict:
        """Medians over the units of every measure, the share of units that moved, the cross-check."""
        out: dict = {"units": len(self.units), "moved_share": float(np.mean(self.moved)), "moved_by": self.moved_by}
        for name in self.MEASURES:
            a = getattr(self, name)
            out[name] = None if a is None or np.isnan(a).all() else float(np.nanmedian(a))
        if self.agreement_after is not None:
            out["cross_check_after"] = ("unknown" if out["agreement_after"] is None
                                        else str(cross_check(out["agreement_after"])))
        return out

    def per_unit(self) -> list[dict]:
        rows = []
        for i, u in enumerate(self.units):
            row: dict = {"unit": int(u), "moved": bool(self.moved[i])}
            for name in self.MEASURES:
                a = getattr(self, name)
                row[name] = None if a is None or not np.isfinite(a[i]) else float(a[i])
            row["top_class"] = None if self.top_classes is None else int(self.top_classes[i])
            row["cross_check_after"] = (None if self.agreement_after is None
                                        else str(cross_check(self.agreement_after[i])))
            rows.append(row)
        return rows


def _render(model: LoadedModel, layer: str, units: Sequence[int], seeds: Sequence[int], cfg: SynthesisConfig,
            reporter=None) -> np.ndarray:
    from fvaudit.engine.synthesis.render import synthesize_many

    res = synthesize_many(model, layer, list(units), list(seeds), cfg, reporter)
    return np.stack([r.images for r in res])          # [S, U, H, W, C]


def measure_rendered(layer: str, units: Sequence[int], seeds: Sequence[int], before: np.ndarray, after: np.ndarray,
                     targets: np.ndarray, *, embed: Callable[[np.ndarray], np.ndarray] | None = None,
                     val_scores: tuple[np.ndarray, np.ndarray] | None = None, val_labels: np.ndarray | None = None,
                     topk_labels: np.ndarray | None = None, agreement: tuple[np.ndarray, np.ndarray] | None = None,
                     natural_embeddings: tuple[np.ndarray, np.ndarray] | None = None) -> FVManipulation:
    """The SPEC §8.1 measures of renders already made: ``before`` / ``after`` ``[S, U, H, W, C]``
    uint8 (the same seeds under θ_init and the manipulated weights), ``targets`` ``[U, H, W, C]`` uint8.

    ``embed``: [N, H, W, C] uint8 → [N, D] L2-normalised embeddings (SPEC §3's embedder; None: pixel
    measures only, and ``moved`` decided on SSIM). ``val_scores``: (θ_init, after) scores [N, U] of
    the units on the validation set with ``val_labels`` [N] and ``topk_labels`` [U, k] (θ_init top-k
    labels: the unit's top class) for the AUROC. Natural–synthetic agreement (SPEC §4) is either
    given (``agreement``: (θ_init, after) [U], e.g. over a whole layer) or computed among these units
    from ``natural_embeddings`` ((θ_init, after) [U, k, D] of their natural top-k; U ≥ 2).
    """
    fb, fa, tgt = before, after, targets
    s_n, u_n = fb.shape[:2]

    def over_seeds(fn, a, b):          # mean over seeds of fn(a[s, u], b[u] or b[s, u])
        return np.array([np.mean([fn(a[s, u], b[u] if b.ndim == 4 else b[s, u]) for s in range(s_n)])
                         for u in range(u_n)])

    ssim_ta, ssim_tb = over_seeds(ssim, fa, tgt), over_seeds(ssim, fb, tgt)
    ssim_oa = over_seeds(ssim, fa, fb)
    mse_ta, mse_tb = over_seeds(pixel_mse, fa, tgt), over_seeds(pixel_mse, fb, tgt)
    cos_ta = cos_tb = cos_oa = None
    agree_b, agree_a = agreement if agreement is not None else (None, None)
    if embed is not None:
        e_t = embed(tgt)                                                   # [U, D]
        e_b = embed(fb.reshape(-1, *fb.shape[2:])).reshape(s_n, u_n, -1)
        e_a = embed(fa.reshape(-1, *fa.shape[2:])).reshape(s_n, u_n, -1)
        cos_ta = np.mean([cosine(e_a[s], e_t) for s in range(s_n)], axis=0)
        cos_tb = np.mean([cosine(e_b[s], e_t) for s in range(s_n)], axis=0)
        cos_oa = np.mean([cosine(e_a[s], e_b[s]) for s in range(s_n)], axis=0)
        if agreement is None and natural_embeddings is not None and u_n >= 2:
            from fvaudit.engine.measure.synthetic import natural_synthetic_agreement

            nb, na = natural_embeddings
            agree_b = natural_synthetic_agreement(nb, e_b.transpose(1, 0, 2))
            agree_a = natural_synthetic_agreement(na, e_a.transpose(1, 0, 2))
    moved = toward_target(cos_ta, cos_oa) if cos_ta is not None else toward_target(ssim_ta, ssim_oa)
    au_b = au_a = classes = None
    if val_scores is not None and val_labels is not None and topk_labels is not None:
        classes = top_class(topk_labels)
        sb, sa = val_scores
        au_b = np.array([auroc(sb[:, i], val_labels == c) for i, c in enumerate(classes)])
        au_a = np.array([auroc(sa[:, i], val_labels == c) for i, c in enumerate(classes)])
    return FVManipulation(layer, [int(u) for u in units], list(seeds), ssim_ta, ssim_tb, ssim_oa, mse_ta, mse_tb,
                          cos_ta, cos_tb, cos_oa, moved, "embedder cosine" if cos_ta is not None else "SSIM",
                          au_b, au_a, classes, agree_b, agree_a, fb, fa, tgt)


def target_uint8(targets: torch.Tensor | np.ndarray) -> np.ndarray:
    """[U, C, H, W] pixels in [0, 1] → [U, H, W, C] uint8 (the stored form of an image)."""
    t = torch.as_tensor(np.asarray(targets)).float()
    return (t.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def measure_fv_manipulation(before: LoadedModel, after: LoadedModel, layer: str, units: Sequence[int],
                            targets: torch.Tensor | np.ndarray, *, synth: SynthesisConfig | None = None,
                            seeds: Sequence[int] = MEASURE_SEEDS, reporter=None, **measures) -> FVManipulation:
    """Render ``units`` of ``layer`` under both weights with ``seeds`` (the attack never rendered)
    and measure them against ``targets`` ([U, C, H, W] pixels in [0, 1], the attack's):
    :func:`measure_rendered` (its keyword arguments pass through)."""
    synth = synth or SynthesisConfig()
    units = [int(u) for u in units]
    fb = _render(before, layer, units, seeds, synth, reporter)
    fa = _render(after, layer, units, seeds, synth, reporter)
    return measure_rendered(layer, units, seeds, fb, fa, target_uint8(targets), **measures)
