"""Synthetic feature visualization: activation maximization from noise (SPEC §4).

``x* = argmax_x a_j(x) − λ·R(x)`` by gradient ascent, with the regularisers of Olah et al.
2017 (Distill, "Feature Visualization"):

* the image is parameterised in a scaled Fourier basis (spectrum scaled by 1/f^decay) and,
  for RGB models, a decorrelated colour space, then squashed to valid pixels by a sigmoid;
* every step sees a randomly jittered, scaled and rotated copy (transformation robustness),
  all applied at once with one ``affine_grid`` / ``grid_sample`` per batch;
* optional total-variation penalty ``λ·TV(x)``.

All units of a layer are optimised together: image ``b`` of a batch maximises unit
``units[b]``, so one forward/backward serves the whole batch. The same seed gives the same
starting noise and the same transformations, so visualizations of θ_init and θ_final are
directly comparable (the thesis' Fig. 3.7 finds them largely unchanged by top-k attacks).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvaudit.engine.activations import layer_scores, run_captured
from fvaudit.engine.models import LoadedModel, ModelError
from fvaudit.engine.progress import NullReporter, Reporter, check_cancel

#: Square root of the ImageNet colour correlation matrix (Lucid's constant): maps
#: decorrelated colour channels to RGB so that each parameter moves a natural colour axis.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


@dataclass
class SynthesisConfig:
    steps: int = 256
    lr: float = 0.05
    batch_units: int = 32
    seed: int = 0
    decay: float = 1.0            # Fourier spectrum scaled by 1 / f^decay
    jitter: float = 0.06          # max translation, fraction of the image size
    scale: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0
    tv_weight: float = 0.0        # λ of the total-variation penalty
    objective: str = "score"      # "score": a_j of SPEC §1; "channel_mean": mean of the channel (SPEC §4)
    device: str = "cpu"

    def validate(self) -> None:
        for name in ("steps", "batch_units"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.tv_weight < 0:
            raise ValueError(f"tv_weight: must be ≥ 0, got {self.tv_weight}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale: must be 0 < low ≤ high, got {self.scale}")
        if self.objective not in ("score", "channel_mean"):
            raise ValueError(f"objective: must be score or channel_mean, got {self.objective!r}")


@dataclass
class SynthesisResult:
    layer: str
    units: list[int]
    images: np.ndarray            # [U, H, W, C] uint8
    activation: np.ndarray        # [U] a_j of its own image, untransformed, at the end
    activation_start: np.ndarray  # [U] a_j of the starting image
    seconds: float
    config: dict = field(default_factory=dict)


class FourierImage(torch.nn.Module):
    """A batch of images parameterised by a scaled spectrum (and decorrelated colour)."""

    def __init__(self, batch: int, channels: int, h: int, w: int, decay: float, generator: torch.Generator):
        super().__init__()
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        self.register_buffer("scale", 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay)
        spec = torch.randn((batch, channels, h, w // 2 + 1, 2), generator=generator) * 0.01
        self.spectrum = torch.nn.Parameter(spec)
        self.h, self.w, self.channels = h, w, channels

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        x = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho") / 4.0
        if self.channels == 3:
            c = COLOR_CORRELATION_SVD_SQRT.to(x.device)
            c = c / c.norm(dim=0).max()
            x = torch.einsum("bchw,dc->bdhw", x, c)
        return torch.sigmoid(x)


def _random_affine(x: torch.Tensor, cfg: SynthesisConfig, g: torch.Generator) -> torch.Tensor:
    """Jitter + scale + rotation in one resampling; borders padded with mid-grey."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(cfg.rotate_deg)
    sc = cfg.scale[0] + torch.rand(b, generator=g) * (cfg.scale[1] - cfg.scale[0])
    tr = (torch.rand(b, 2, generator=g) * 2 - 1) * cfg.jitter * 2  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tr[:, 0]], 1), torch.stack([sin, cos, tr[:, 1]], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _relu_input_layer(model: LoadedModel, layer: str) -> str | None:
    """For a ReLU layer, the layer feeding it (same shape), whose output is the pre-activation."""
    names = [i.name for i in model.layers]
    i = names.index(layer)
    info = model.layers[i]
    if info.module_type != "ReLU" or i == 0:
        return None
    prev = model.layers[i - 1]
    return prev.name if prev.shape == info.shape else None


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def synthesize(model: LoadedModel, layer: str, units: Sequence[int] | None = None,
               cfg: SynthesisConfig | None = None, reporter: Reporter | None = None) -> SynthesisResult:
    """One synthetic image per unit of ``layer`` (all units when ``units`` is None)."""
    cfg = cfg or SynthesisConfig()
    cfg.validate()
    reporter = reporter or NullReporter()
    if model.normalize is None:
        raise ModelError(f"model {model.name} has no differentiable input normalisation: cannot synthesise")
    info = model.layer(layer)
    units = model.check_units(info.name, units)
    pre = _relu_input_layer(model, info.name) if cfg.objective == "score" else None
    c, h, w = model.input_shape
    device = torch.device(cfg.device)
    module = model.module.to(device).eval()
    params = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    images, act_end, act_start = [], [], []
    t0 = time.perf_counter()
    n_chunks = math.ceil(len(units) / cfg.batch_units)
    reporter.stage(f"synthesise {info.name}", total=cfg.steps * n_chunks)
    try:
        for ci in range(n_chunks):
            chunk = units[ci * cfg.batch_units : (ci + 1) * cfg.batch_units]
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ci)
            img = FourierImage(len(chunk), c, h, w, cfg.decay, g).to(device)
            opt = torch.optim.Adam(img.parameters(), lr=cfg.lr)
            idx = torch.arange(len(chunk), device=device)
            cols = torch.as_tensor(chunk, device=device)

            def own_scores(x: torch.Tensor) -> torch.Tensor:
                if cfg.objective == "channel_mean":
                    outs, _ = run_captured(module, model.normalize(x), [info.name])
                    return outs[info.name][idx, cols].flatten(1).mean(1)
                s, _ = layer_scores(module, model.normalize(x), [info.name])
                return s[info.name][idx, cols]

            def objective(x: torch.Tensor) -> torch.Tensor:
                if pre is None:
                    return own_scores(x)
                # a ReLU unit silent on noise has zero gradient: optimise its input z with
                # a_j = Σ relu(z)² plus a small linear term that lifts z while it is all < 0
                outs, _ = run_captured(module, model.normalize(x), [pre])
                z = outs[pre][idx, cols]
                return z.clamp_min(0).pow(2).flatten(1).sum(1) + 1e-2 * z.flatten(1).sum(1)

            with torch.no_grad():
                act_start.append(own_scores(img()).cpu())
            for step in range(cfg.steps):
                check_cancel(reporter)
                x = _random_affine(img(), cfg, g)
                a = objective(x)
                loss = -a.mean()
                if cfg.tv_weight > 0:
                    loss = loss + cfg.tv_weight * _total_variation(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                reporter.advance(ci * cfg.steps + step + 1, cfg.steps * n_chunks, activation=float(a.mean().detach()))
            with torch.no_grad():
                final = img()
                act_end.append(own_scores(final).cpu())
                images.append((final.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu())
    finally:
        for p, r in zip(module.parameters(), params):
            p.requires_grad_(r)
    return SynthesisResult(info.name, list(units), torch.cat(images).numpy(), torch.cat(act_end).numpy(),
                           torch.cat(act_start).numpy(), time.perf_counter() - t0,
                           {k: v for k, v in cfg.__dict__.items()})


def synthesize_many(model: LoadedModel, layer: str, units: Sequence[int] | None, seeds: Sequence[int],
                    cfg: SynthesisConfig | None = None, reporter: Reporter | None = None) -> list[SynthesisResult]:
    """``n_synth = len(seeds)`` images per unit: one :class:`SynthesisResult` per seed, each equal
    to ``synthesize`` with ``cfg.seed = seed`` (so θ_init and θ_final renders with the same
    seeds differ only by the weights, SPEC §4)."""
    import dataclasses

    cfg = cfg or SynthesisConfig()
    return [synthesize(model, layer, units, dataclasses.replace(cfg, seed=int(s)), reporter) for s in seeds]


def save_grid(images: np.ndarray, path, labels: Sequence[str] | None = None, cell: int = 112, cols: int = 8) -> None:
    """A PNG contact sheet of synthetic images (nearest upscaling keeps small images crisp)."""
    from PIL import Image, ImageDraw

    n = len(images)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    pad = 14 if labels else 0
    sheet = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, arr in enumerate(images):
        im = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).convert("RGB")
        im = im.resize((cell, cell), Image.NEAREST)
        x, y = (i % cols) * cell, (i // cols) * (cell + pad)
        sheet.paste(im, (x, y))
        if labels:
            draw.text((x + 2, y + cell), str(labels[i]), fill="black")
    sheet.save(path)
