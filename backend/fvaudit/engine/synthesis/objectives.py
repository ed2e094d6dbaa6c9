"""Objectives (lucent's shape, STYLE.md): a per-image value read from captured layer outputs,
combinable with ``+`` and ``*``: a unit's score (SPEC §1's a_j), a channel mean, a lifted
ReLU score for units silent at the start, and the total-variation regulariser."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.synthesis.config import SynthesisConfig


ObjectiveFn = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A value per image to maximise: ``fn(acts, image, units) -> [B]``.

    ``acts`` holds the outputs of ``layers`` for the batch, ``image`` is the (transformed)
    batch the model saw, ``units[b]`` the unit image ``b`` is rendered for. Objectives add
    and scale like lucent's (``unit_score(l) + (-0.1) * total_variation()``), and each
    image's value depends only on that image, so the batch loss is a plain sum.
    """

    name: str
    layers: tuple[str, ...]
    fn: ObjectiveFn
    #: reads only ``acts[layer][b, units[b]]`` (so a render may compute just that channel)
    own_channel: bool = False

    def __call__(self, acts: dict[str, torch.Tensor], image: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return self.fn(acts, image, units)

    def __add__(self, other: "Objective") -> "Objective":
        return Objective(f"{self.name} + {other.name}", tuple(dict.fromkeys(self.layers + other.layers)),
                         lambda a, x, u: self.fn(a, x, u) + other.fn(a, x, u), self.own_channel and other.own_channel)

    def __mul__(self, k: float) -> "Objective":
        k = float(k)
        return Objective(f"{k:g}·{self.name}", self.layers, lambda a, x, u: k * self.fn(a, x, u), self.own_channel)

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)


def _own_channel(out: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Image b's unit ``units[b]``: conv [B,C,H,W] → [B,H·W]; tokens [B,T,D] → [B,T]; fc [B,D] → [B,1]."""
    b = torch.arange(out.shape[0], device=out.device)
    if out.dim() == 4:
        return out[b, units].flatten(1)
    if out.dim() == 3:
        return out[b, :, units]
    if out.dim() == 2:
        return out[b, units][:, None]
    raise ValueError(f"expected a 2-D, 3-D or 4-D layer output, got shape {tuple(out.shape)}")


def unit_score(layer: str) -> Objective:
    """``a_j`` of SPEC §1 (what the top-k ranks by): Σ x² over space (conv) or tokens, the
    value itself for a fully connected layer."""
    def fn(acts, _x, units):
        out = acts[layer]
        own = _own_channel(out, units)
        return own[:, 0] if out.dim() == 2 else own.pow(2).sum(1)

    return Objective("score", (layer,), fn, own_channel=True)


def channel_mean(layer: str) -> Objective:
    """The channel's mean (lucent's ``channel`` objective), SPEC §4's option for layers whose
    outputs can be negative, where Σ x² would also reward large negative activations."""
    return Objective("channel_mean", (layer,), lambda acts, _x, units: _own_channel(acts[layer], units).mean(1),
                     own_channel=True)


def lifted_relu_score(pre_layer: str, lift: float = 1e-2) -> Objective:
    """``a_j`` of a ReLU layer computed from its input ``z``: Σ relu(z)² + lift·Σ z.

    A ReLU unit silent on the starting noise has zero gradient under Σ relu(z)²; the small
    linear term lifts ``z`` while it is all negative and is negligible once the unit fires.
    Its gradient is the ReLU layer's a_j gradient wherever the unit is active.
    """
    def fn(acts, _x, units):
        z = _own_channel(acts[pre_layer], units)
        return z.clamp_min(0).pow(2).sum(1) + lift * z.sum(1)

    return Objective("score", (pre_layer,), fn, own_channel=True)


def total_variation(weight: float = 1.0) -> Objective:
    """``−weight·TV(x)`` per image (a regulariser: add it to an objective)."""
    def fn(_acts, x, _units):
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        return -weight * tv

    return Objective(f"tv×{weight:g}", (), fn, own_channel=True)


def _relu_input_layer(model: LoadedModel, layer: str) -> str | None:
    """For a ReLU layer, the layer feeding it (same shape), whose output is the pre-activation."""
    names = [i.name for i in model.layers]
    i = names.index(layer)
    info = model.layers[i]
    if info.module_type != "ReLU" or i == 0:
        return None
    prev = model.layers[i - 1]
    return prev.name if prev.shape == info.shape else None


def measure_objective(layer: str, name: str = "score") -> Objective:
    """The objective a result is scored and recorded by (SPEC §4): ``a_j`` or the channel mean."""
    if name == "score":
        return unit_score(layer)
    if name == "channel_mean":
        return channel_mean(layer)
    raise ValueError(f"objective: must be score or channel_mean, got {name!r}")


def ascent_objective(model: LoadedModel, layer: str, cfg: SynthesisConfig) -> Objective:
    """What gradient ascent maximises for ``cfg``: the measured objective (through a ReLU's
    input for ``score`` on a ReLU layer, see :func:`lifted_relu_score`) plus the TV penalty."""
    pre = _relu_input_layer(model, layer) if cfg.objective == "score" else None
    obj = lifted_relu_score(pre) if pre is not None else measure_objective(layer, cfg.objective)
    if cfg.tv_weight > 0:
        obj = obj + total_variation(cfg.tv_weight)
    return obj
