"""The per-unit measures of synthetic feature visualizations (SPEC §4).

Inputs are the images :func:`fvaudit.engine.synthesis.render.synthesize_many` renders under
θ_init and θ_final with the same seeds (``n`` images per unit), their embeddings and
their scores; outputs are one float64 value per unit, NaN where the measure is undefined
(aggregated like SPEC §3: NaN skipped and counted, ``metrics.nan_aggregate``).

* :func:`synthetic_clip_delta`: CLIP-δ of SPEC §3 with ``T_j`` = the unit's synthetic images.
* :func:`synthetic_transfer`: does the old visualization still drive the unit after the attack?
* :func:`natural_synthetic_agreement`: are a unit's top-k images closer to its own synthetic
  images than to other units'?
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fvaudit.engine.measure import clip_delta, set_similarity
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.synthesis.render import score_images


def _uint8_images(images: np.ndarray, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got dtype {arr.dtype}")
    if arr.ndim != ndim or arr.shape[-1] not in (1, 3):
        want = "[N, H, W, C]" if ndim == 4 else "[J, n, H, W, C]"
        raise ValueError(f"{name}: expected {want} with C = 1 or 3, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name}: empty dimension in shape {arr.shape}")
    return arr


def embed_images(embedder, images: np.ndarray, progress=None) -> np.ndarray:
    """Embeddings ``e(x)`` of SPEC §3 for synthetic images: ``[N, H, W, C]`` uint8 → ``[N, D]``.

    Rows are L2-normalised by ``Embedder.embed`` (``engine/measure/embedders.py``); grayscale images
    (C = 1) go in as ``[H, W]`` arrays, which the embedder turns into RGB as it does for
    natural grayscale images, so synthetic and natural images are embedded alike.
    ``progress(done, total)``: after every embedder batch, when the embedder reports it.
    """
    arr = _uint8_images(images, 4, "images")
    items = [a[..., 0] if a.shape[-1] == 1 else a for a in arr]
    out = embedder.embed(items, progress=progress) if progress is not None else embedder.embed(items)
    return np.asarray(out, dtype=np.float32)


def unit_scores_of_images(model: LoadedModel, layer: str, units: Sequence[int], images: np.ndarray,
                          objective: str = "score", device: str | torch.device = "cpu",
                          batch_size: int = 64) -> np.ndarray:
    """``a_j`` (SPEC §1; or the channel mean, SPEC §4) of unit ``units[j]`` on its own images.

    ``images`` ``[J, n, H, W, C]`` uint8 at the model's input size. Pixels are scaled to
    [0, 1] and pass through ``model.normalize``, exactly as synthesis scores its images
    (no resize or crop: they are already at the input size). Returns float64 ``[J, n]``.
    Used for synthetic transfer (score θ_init's images under θ_final) and as the one
    evaluator that compares renderers at equal quality (``bench/synthesis.py``).
    """
    arr = _uint8_images(images, 5, "images")
    units = model.check_units(layer, units)
    j, n = arr.shape[:2]
    if j != len(units):
        raise ValueError(f"images: {j} units of images but {len(units)} units")
    want = tuple(model.input_shape)
    got = (arr.shape[4], arr.shape[2], arr.shape[3])
    if got != want:
        raise ValueError(f"images: size {got} (C, H, W) does not match the model input {want}")
    x = torch.from_numpy(arr.reshape(j * n, *arr.shape[2:])).permute(0, 3, 1, 2).float() / 255.0
    per_image = np.repeat(np.asarray(units), n)
    return score_images(model, layer, per_image.tolist(), x, objective, device, batch_size).reshape(j, n)


def synthetic_clip_delta(e_init: np.ndarray, e_final: np.ndarray) -> np.ndarray:
    """Synthetic CLIP-δ_j (SPEC §4): CLIP-δ of SPEC §3 with ``T_j`` = the unit's synthetic
    images under θ_init / θ_final (same seeds), in place of its top-k.

    ``e_init``, ``e_final``: ``[J, n, D]`` embeddings, J ≥ 2. The same images before and
    after give exactly 0. Reuses ``metrics.clip_delta`` (one implementation of the formula).
    """
    return clip_delta(e_init, e_final)


def synthetic_transfer(a_init_on_init: np.ndarray, a_final_on_init: np.ndarray,
                       val_mean_init: np.ndarray, val_mean_final: np.ndarray) -> np.ndarray:
    """Synthetic transfer_j (SPEC §4) = ``mean a_j(x*_init; θ_final) / mean a_j(x*_init; θ_init)``,
    each score divided by the unit's mean score over the validation set under the same weights.

    ``a_init_on_init`` / ``a_final_on_init``: ``[J, n]`` scores of θ_init's synthetic images
    under θ_init / θ_final; ``val_mean_init`` / ``val_mean_final``: ``[J]`` mean validation
    scores under θ_init / θ_final (same objective). ≈ 1: the old visualization drives the
    unit as much, relative to natural images, as before. NaN where undefined: a validation
    mean of 0 (a unit silent on the validation set), a zero denominator, or a non-finite input.
    """
    ai = np.asarray(a_init_on_init, dtype=np.float64)
    af = np.asarray(a_final_on_init, dtype=np.float64)
    vi = np.asarray(val_mean_init, dtype=np.float64)
    vf = np.asarray(val_mean_final, dtype=np.float64)
    if ai.ndim != 2 or ai.shape != af.shape:
        raise ValueError(f"a_init_on_init and a_final_on_init: expected equal [J, n] shapes, got {ai.shape} and {af.shape}")
    if vi.shape != (ai.shape[0],) or vf.shape != (ai.shape[0],):
        raise ValueError(f"val_mean_init and val_mean_final: expected shape ({ai.shape[0]},), got {vi.shape} and {vf.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        num = af.mean(axis=1) / vf
        den = ai.mean(axis=1) / vi
        out = num / den
    undefined = (vi == 0) | (vf == 0) | (den == 0) | ~np.isfinite(out)
    return np.where(undefined, np.nan, out)


def natural_synthetic_agreement(e_natural: np.ndarray, e_synth: np.ndarray) -> np.ndarray:
    """Natural–synthetic agreement_j (SPEC §4) = ``C(T_j^natural, S_j) / mean_{p≠j} C(T_j^natural, S_p)``.

    ``e_natural``: ``[J, k, D]`` embeddings of each unit's natural top-k; ``e_synth``:
    ``[J, n, D]`` of its synthetic images (same model); ``C`` is SPEC §3's set similarity
    (``metrics.set_similarity``). > 1: a unit's top-k is closer to its own synthetic images
    than to other units'. Needs J ≥ 2; NaN where the denominator is exactly 0.
    """
    c = set_similarity(e_natural, e_synth)
    j = c.shape[0]
    if c.shape != (j, j):
        raise ValueError(f"e_natural has {c.shape[0]} units but e_synth has {c.shape[1]}")
    if j < 2:
        raise ValueError(f"e_natural: needs at least 2 units (J ≥ 2) to compare against, got J = {j}")
    own = np.diagonal(c).copy()
    others = (c.sum(axis=1) - own) / (j - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = own / others
    return np.where(others == 0, np.nan, out)
