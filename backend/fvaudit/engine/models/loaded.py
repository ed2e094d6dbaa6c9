"""The loaded-model type every engine step takes: the ``nn.Module`` in eval mode, its
preprocessing (decoded uint8 pixels → input tensor), its class names and the list of its
layers with output shapes and unit counts (the layer picker, SPEC §1)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fvaudit.engine.models.fmnist_cnn import DEMO_MODEL

#: Display labels for the layers the thesis talks about (SPEC §1: "convN" is the ReLU
#: node after conv N, because torchvision's ReLUs are in place).
LAYER_LABELS = {
    "alexnet": {"features.1": "conv1", "features.4": "conv2", "features.7": "conv3",
                "features.9": "conv4", "features.11": "conv5"},
    DEMO_MODEL: {"relu1": "conv1 (post-ReLU)", "relu2": "conv2 (post-ReLU)", "relu3": "conv3 (post-ReLU)"},
}


class ModelError(ValueError):
    """A model, layer, unit or checkpoint cannot be used (message names it and why)."""


@dataclass
class LayerInfo:
    """One addressable layer: a named module's output (SPEC §1)."""

    name: str
    kind: str            # "conv" [C,H,W] | "tokens" [T,D] | "fc" [D]
    shape: tuple[int, ...]  # output shape without the batch dimension
    units: int
    module_type: str
    label: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "units": self.units,
                "module_type": self.module_type, "label": self.label}


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    preprocess: Callable[[np.ndarray], torch.Tensor]
    class_names: list[str]
    input_shape: tuple[int, ...]
    source: str
    weights: str
    layers: list[LayerInfo] = field(default_factory=list)
    preprocess_many: Callable[[Sequence[np.ndarray]], torch.Tensor] | None = None
    #: differentiable map from pixels in [0, 1], shape [B, *input_shape], to the model's
    #: input (synthetic visualization optimises pixels, SPEC §4)
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.preprocess_many is None:
            pre = self.preprocess
            self.preprocess_many = lambda arrays: torch.stack([pre(a) for a in arrays])
        if not self.layers:
            self.refresh_layers()

    def layer(self, name: str) -> LayerInfo:
        """The layer by module name or display label; ModelError listing choices if unknown."""
        for info in self.layers:
            if info.name == name:
                return info
        for info in self.layers:
            if info.label is not None and info.label == name:
                return info
        raise ModelError(f"unknown layer {name!r} for model {self.name}; conv layers: {self.accepted_names()}")

    def accepted_names(self, limit: int = 400) -> str:
        """The conv layers as a user types them: the module name, and a label too when it is
        one word (AlexNet's ``features.11 or conv5``). Labels like ``conv3 (post-ReLU)`` are
        for reading, not typing, so the message names ``relu3`` (issue 13, item 17)."""
        def one(i: LayerInfo) -> str:
            return f"{i.name} or {i.label}" if i.label and i.label != i.name and " " not in i.label else i.name
        return ", ".join(one(i) for i in self.layers if i.kind == "conv")[:limit]

    def check_units(self, layer: str, units: Sequence[int] | None) -> list[int]:
        """Validate unit indices of a layer (None = all units)."""
        info = self.layer(layer)
        if units is None:
            return list(range(info.units))
        out = []
        for u in units:
            if not isinstance(u, (int, np.integer)) or not 0 <= int(u) < info.units:
                raise ModelError(
                    f"unit index {u} out of range for layer {info.name} of {self.name}: it has {info.units} units (0..{info.units - 1})"
                )
            out.append(int(u))
        if len(set(out)) != len(out):
            raise ModelError(f"duplicate unit indices for layer {info.name}")
        return out

    def conv_layers(self) -> list[str]:
        return [i.name for i in self.layers if i.kind == "conv"]

    def refresh_layers(self) -> None:
        """Recompute the layer list (unit counts) after a structural change (pruning)."""
        self.layers = list_layers(self.module, self.input_shape, LAYER_LABELS.get(self.name, {}))

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.module.to(device)
        return self


def _module_type(m: nn.Module) -> str:
    return type(m).__name__


@torch.no_grad()
def list_layers(module: nn.Module, input_shape: tuple[int, ...], labels: dict[str, str] | None = None) -> list[LayerInfo]:
    """Run one dummy forward with hooks on every named module; keep single-use tensor outputs.

    Modules called more than once per forward (a shared activation module) have no
    single output and are left out; so are containers whose output equals a child's.
    """
    labels = labels or {}
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    named = [(n, m) for n, m in module.named_modules() if n]
    for name, mod in named:
        def hook(_m, _inp, out, name=name):
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
        handles.append(mod.register_forward_hook(hook))
    was_training = module.training
    module.eval()
    try:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        module(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    layers = []
    for name, mod in named:
        if calls.get(name) != 1 or name not in shapes:
            continue
        shape = shapes[name]
        if len(shape) == 3:
            kind, units = "conv", shape[0]
        elif len(shape) == 2:
            kind, units = "tokens", shape[1]
        elif len(shape) == 1:
            kind, units = "fc", shape[0]
        else:
            continue
        layers.append(LayerInfo(name, kind, shape, units, _module_type(mod), labels.get(name)))
    return layers


def pil_rgb(a: np.ndarray):
    """Decoded pixels (gray or RGB uint8) as an RGB PIL image, the input of library transforms."""
    from PIL import Image

    im = Image.fromarray(a)
    return im if im.mode == "RGB" else im.convert("RGB")
