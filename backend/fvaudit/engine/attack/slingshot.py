"""Gradient Slingshots (Bareeva et al. 2024/2025; SPEC §8.1): fine-tune so that activation
maximization of a unit, rendered exactly as the auditor renders it, converges to a target image.

The pieces, each a small function checked on its own:

* :func:`load_targets`: the target images as pixels of the model's input shape;
* the target in parameter space ``q_t = η⁻¹(x_t)`` (:meth:`FourierImage.inverse`, the
  project's own renderer of SPEC §4: scaled Fourier basis, decorrelated colour, sigmoid);
* :func:`tunnel`: samples ``q = p·q_t + u``, ``p ~ U(0, 1)``, ``u ~ U(−sd, sd)``: the region a
  render starting near 0 (the renderer's noise has sd 0.01) travels through;
* :func:`wanted_field`: ``γ·(q_t − q)``, the gradient of ``φ(q) = −γ/2·‖q_t − q‖²``, so gradient
  ascent from anywhere on the tunnel converges geometrically to ``q_t``;
* :func:`input_gradient`: ``∇_q a_j(η(q); θ)`` with ``create_graph`` (double back-propagation:
  the loss on it is differentiated again with respect to θ);
* :class:`SlingshotTerm`: ``L_S`` per step (gradient form by default, activation form as an
  option) and :func:`preservation`: ``L_P`` on natural images.

Why the render's own objective and transforms: the attack shapes the landscape the auditor's
optimiser walks; a landscape shaped for another parameterisation (pixels) or another objective
is not the one the auditor's render follows (the tunnel would miss its trajectory).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.scans.activations import _StopForward, capture
from fvaudit.engine.synthesis.config import SynthesisConfig
from fvaudit.engine.synthesis.objectives import Objective, ascent_objective
from fvaudit.engine.synthesis.params import FourierImage, FourierParam
from fvaudit.engine.synthesis.transforms import RandomAffine


class TargetImageError(ValueError):
    """A target image cannot be used (message names the field)."""


def target_pixels(image, input_shape: Sequence[int]) -> np.ndarray:
    """One target image (a path, a PIL image or an [H, W(, C)] uint8 array) as float32 pixels
    ``[C, H, W]`` in [0, 1] at the model's input shape: converted to the model's channels
    (grey or RGB) and resized with bilinear filtering (a synthetic image has that shape)."""
    from PIL import Image

    c, h, w = (int(v) for v in input_shape)
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                im.load()
                pil = im.copy()
        except (OSError, ValueError) as e:
            raise TargetImageError(f"target_images: cannot read {Path(image).name}: {e}") from None
    elif isinstance(image, np.ndarray):
        arr = image if image.dtype == np.uint8 else np.clip(image * 255, 0, 255).astype(np.uint8)
        pil = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    else:
        pil = image
    pil = pil.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    return arr[None] if c == 1 else arr.transpose(2, 0, 1).copy()


def load_targets(paths: Sequence, n_units: int, input_shape: Sequence[int]) -> torch.Tensor:
    """``[U, C, H, W]`` targets: one image for every unit, or one per unit in order."""
    if len(paths) not in (1, n_units):
        raise TargetImageError(f"target_images: give one image for every unit or one per attacked unit "
                               f"({n_units}), got {len(paths)}")
    pix = [torch.from_numpy(target_pixels(p, input_shape)) for p in paths]
    return torch.stack(pix if len(pix) == n_units else pix * n_units)


def tunnel(q_t: torch.Tensor, n: int, sd: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` tunnel samples per target: ``q = p·q_t + u`` with ``p ~ U(0, 1)`` per sample and
    ``u ~ U(−sd, sd)`` per entry (SPEC §8.1). Returns (q ``[U·n, ...]``, the row's target index ``[U·n]``)."""
    u_count = q_t.shape[0]
    idx = torch.arange(u_count).repeat_interleave(n)
    p = torch.rand((u_count * n,), generator=generator, dtype=q_t.dtype)
    noise = (torch.rand((u_count * n, *q_t.shape[1:]), generator=generator, dtype=q_t.dtype) * 2 - 1) * sd
    shape = (-1,) + (1,) * (q_t.dim() - 1)
    return p.view(shape) * q_t[idx] + noise, idx


def clipped_tunnel(q_t: torch.Tensor, n: int, sd: float, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples per target along the path the render's Adam takes under the wanted field:
    Adam moves every entry at about its learning rate toward its target, so from 0 the entries
    follow ``q = clip(q_t, −r, r)`` as the radius ``r`` grows, not the straight segment ``p·q_t``
    (which they leave after the first steps); ``r ~ U(0, max|q_t|)``, plus ``u ~ U(−sd, sd)``."""
    u_count = q_t.shape[0]
    idx = torch.arange(u_count).repeat_interleave(n)
    reach = q_t.abs().flatten(1).amax(1)[idx]
    r = torch.rand((u_count * n,), generator=generator, dtype=q_t.dtype) * reach
    noise = (torch.rand((u_count * n, *q_t.shape[1:]), generator=generator, dtype=q_t.dtype) * 2 - 1) * sd
    shape = (-1,) + (1,) * (q_t.dim() - 1)
    rr = r.view(shape)
    return torch.maximum(torch.minimum(q_t[idx], rr), -rr) + noise, idx


def wanted_field(q: torch.Tensor, q_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """``∇φ(q) = γ·(q_t − q)`` for ``φ(q) = −γ/2·‖q_t − q‖²`` (SPEC §8.1)."""
    return gamma * (q_t - q)


def wanted_activation(q: torch.Tensor, q_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """The activation form's target ``γ·(1 − mean((q − q_t)²))`` per sample (SPEC §8.1)."""
    return gamma * (1 - (q - q_t).pow(2).flatten(1).mean(1))


def _objective_value(module: torch.nn.Module, model: LoadedModel, objective: Objective, x: torch.Tensor,
                     units: torch.Tensor) -> torch.Tensor:
    with capture(module, objective.layers, stop_early=True) as store:
        try:
            module(model.normalize(x))
        except _StopForward:
            pass
        return objective(dict(store), x, units)


def input_gradient(module: torch.nn.Module, model: LoadedModel, objective: Objective, image: FourierImage,
                   q: torch.Tensor, units: torch.Tensor, transform: RandomAffine | None = None,
                   draws: torch.Tensor | None = None, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``∇_q a(η(q))`` per sample (and ``a``), ``a`` the render's objective of ``units[b]``, the
    images through the render's transform when given. ``create_graph``: the gradient stays
    differentiable with respect to the weights (double back-propagation)."""
    q = q.detach().requires_grad_(True)
    x = image.pixels(q)
    if transform is not None:
        x = transform(x, draws)
    a = _objective_value(module, model, objective, x, units)
    (g,) = torch.autograd.grad(a.sum(), q, create_graph=create_graph)
    return g, a


@contextlib.contextmanager
def softplus_relus(module: torch.nn.Module, beta: float = 10.0) -> Iterator[int]:
    """Every ``nn.ReLU`` of ``module`` replaced by ``Softplus(β)`` inside the block (the paper's
    ``replace_relu``: a ReLU network's input gradient is piecewise constant in the input, so its
    landscape is hard to shape); restored after. Yields how many were replaced."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for name, m in list(module.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, torch.nn.ReLU):
                swapped.append((m, child_name, child))
                setattr(m, child_name, torch.nn.Softplus(beta=beta))
    try:
        yield len(swapped)
    finally:
        for parent, child_name, child in swapped:
            setattr(parent, child_name, child)


class SlingshotTerm:
    """``L_S`` of SPEC §8.1 for the attacked units of one layer, each with its target.

    ``form="gradient"``: ``MSE(∇_q a_j(η(q)), γ(q_t − q))`` over the tunnel samples (on the
    spectrum entries the image depends on); ``"activation"``: ``MSE(a_j(η(q)), γ(1 − mean((q − q_t)²)))``.
    ``norm="relative"`` divides by the mean square of the wanted values, so L_S starts near 1
    whatever γ and the layer's scale, and one α balances it against distillation (SPEC §2's
    controller works in the same range as for push-down); ``"none"`` is the paper's raw MSE.
    """

    def __init__(self, model: LoadedModel, layer: str, units: Sequence[int], targets: torch.Tensor, *,
                 gamma: float, sd: float, per_unit: int, form: str = "gradient", norm: str = "relative",
                 objective: str = "score", transforms: bool = True, softplus: bool = False, path: str = "segment",
                 synth: SynthesisConfig | None = None, device: torch.device | str = "cpu", seed: int = 0):
        synth = synth or SynthesisConfig(objective=objective)
        self.model, self.layer, self.gamma, self.sd, self.per_unit = model, layer, gamma, sd, per_unit
        self.form, self.norm, self.softplus, self.seed, self.path = form, norm, softplus, seed, path
        self.device = torch.device(device)
        self.objective = ascent_objective(model, layer, SynthesisConfig(objective=objective, tv_weight=synth.tv_weight))
        self.image = FourierParam(synth.decay).build(tuple(model.input_shape), [torch.Generator()]).to(self.device)
        self.transform = RandomAffine(synth.jitter, tuple(synth.scale), synth.rotate_deg) if transforms else None
        self.units = torch.as_tensor(list(units), dtype=torch.long)
        self.targets = targets.float()
        self.q_t = self.image.inverse(self.targets.to(self.device)).detach()
        self.mask = self.image.live_mask().to(self.device).float()

    def sample(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This step's tunnel samples, their units and transform draws, from (seed, step) alone
        (a resumed attack draws the same)."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, step, 8_1]).generate_state(1)[0]))
        q, idx = (clipped_tunnel if self.path == "clipped" else tunnel)(self.q_t.cpu(), self.per_unit, self.sd, g)
        draws = self.transform.draw(g, len(idx)) if self.transform is not None else None  # [N, 4]
        return q.to(self.device), idx.to(self.device), None if draws is None else draws.to(self.device)

    def __call__(self, module: torch.nn.Module, step: int) -> torch.Tensor:
        q, idx, draws = self.sample(step)
        units = self.units.to(self.device)[idx]
        q_t = self.q_t[idx]
        ctx = softplus_relus(module) if self.softplus else contextlib.nullcontext()
        with ctx:
            if self.form == "gradient":
                g, _ = input_gradient(module, self.model, self.objective, self.image, q, units, self.transform, draws)
                want = wanted_field(q, q_t, self.gamma)
                if self.norm == "adam":
                    # each spectrum entry counts alike, as in the render's Adam (its step is g_i ÷ the
                    # running RMS of g_i): both fields divided entrywise by their RMS over the samples
                    g_hat = g / g.detach().pow(2).mean(0, keepdim=True).sqrt().clamp_min(1e-12)
                    w_hat = want / want.pow(2).mean(0, keepdim=True).sqrt().clamp_min(1e-12)
                    return ((g_hat - w_hat).pow(2) * self.mask).sum() / (self.mask.sum() * len(q))
                if self.norm == "cosine":
                    return (1 - F.cosine_similarity((g * self.mask).flatten(1), (want * self.mask).flatten(1),
                                                    dim=1, eps=1e-12)).mean()
                err = ((g - want).pow(2) * self.mask).sum() / (self.mask.sum() * len(q))
                scale = (want.pow(2) * self.mask).sum() / (self.mask.sum() * len(q))
            else:
                x = self.image.pixels(q)
                if self.transform is not None:
                    x = self.transform(x, draws)
                a = _objective_value(module, self.model, self.objective, x, units)
                want = wanted_activation(q, q_t, self.gamma)
                err = F.mse_loss(a, want)
                scale = want.pow(2).mean()
        return err / scale.clamp_min(1e-12) if self.norm == "relative" else err


def preservation(student_out: torch.Tensor, teacher_out: torch.Tensor, units: torch.Tensor, w: float) -> torch.Tensor:
    """``L_P = w·MSE(a_j, a_j^init) + (1 − w)·MSE(A_l, A_l^init)`` on natural images (SPEC §8.1):
    the attacked channels and the whole layer, each divided by the mean square of the layer's
    θ_init output (scale-free, so it adds to the distillation loss at its own size). Slingshots
    alone adds it to L_M; the combined attack does not (its push-up changes natural activations)."""
    scale = teacher_out.detach().float().pow(2).mean().clamp_min(1e-12)
    s, t = student_out.float(), teacher_out.detach().float()
    unit = F.mse_loss(s[:, units], t[:, units])
    layer = F.mse_loss(s, t)
    return (w * unit + (1 - w) * layer) / scale
