"""timm architectures as fvaudit models: ``timm:<architecture>[.<pretrained tag>]``.

Everything a :class:`~fvaudit.engine.models.loaded.LoadedModel` needs comes from timm itself,
so a ViT and a ConvNeXt are audited with exactly the preprocessing they were trained
with:

* preprocessing: ``timm.data.resolve_model_data_config`` (input size, interpolation,
  crop, mean/std) turned into timm's own eval transform (``create_transform``);
* layers: every single-use module output (SPEC §1: a ``[T, D]`` ViT block is a token
  layer, a ``[C, H, W]`` ConvNeXt stage a conv layer), the blocks/stages timm lists in
  ``feature_info`` labelled for the picker ("stage 2 (stride 16)");
* weights: ``pretrained=True`` loads timm's pretrained weights from the Hugging Face
  cache (or downloads them when the machine is online); when neither works the error
  names the cache path and the hub id, and ``pretrained=False`` is the explicit
  random-init choice (tests use it).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

PREFIX = "timm:"

#: a few architectures for the picker; any other timm name works with the prefix too
LISTED = {
    "vit_tiny_patch16_224": "ViT-Ti/16 (5.7 M params), token layers blocks.0-11",
    "vit_base_patch16_224": "ViT-B/16, token layers blocks.0-11",
    "convnext_atto": "ConvNeXt-Atto (3.7 M params), conv stages 0-3",
    "convnext_tiny": "ConvNeXt-T, conv stages 0-3",
    "resnet50": "timm ResNet-50 (a1_in1k recipe), conv stages layer1-4",
}


def available() -> bool:
    """timm is installed (it is optional: the registry lists its models only then)."""
    return importlib.util.find_spec("timm") is not None


def _timm():
    from fvaudit import _tv_guard  # noqa: F401  (timm imports torchvision)
    import timm

    return timm


def arch_of(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def knows(name: str) -> bool:
    """``timm:<architecture>`` where timm has that architecture (a pretrained tag may follow)."""
    if not (isinstance(name, str) and name.startswith(PREFIX) and len(name) > len(PREFIX)):
        return False
    try:
        return bool(_timm().is_model(arch_of(name)))
    except Exception:
        return False


def all_names() -> list[str]:
    return [PREFIX + n for n in _timm().list_models()]


def weights_cache(arch: str) -> str:
    """Where timm would find pretrained weights of ``arch`` offline (for the error message)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import constants

        return f"{Path(constants.HF_HUB_CACHE) / ('models--' + hub_id.replace('/', '--'))} (hub id {hub_id})"
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        import torch

        return str(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url))
    return "(timm has no pretrained weights for it)"


def class_names(module: Any) -> list[str]:
    """ImageNet-1k names as the other sources give them (torchvision's short names);
    timm's ImageNetInfo for other ImageNet subsets; indices otherwise."""
    n = int(getattr(module, "num_classes", 0) or 0)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
    except Exception:
        subset = None
    if n == 1000 and subset in (None, "imagenet-1k"):
        from torchvision.models import AlexNet_Weights

        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == n:
            return [d.split(",")[0] for d in info.label_descriptions()]
    return [str(i) for i in range(n)]


def stage_labels(module: Any) -> dict[str, str]:
    """Picker labels of the feature stages timm declares (``feature_info``)."""
    labels = {}
    for i, f in enumerate(getattr(module, "feature_info", None) or []):
        name = f.get("module") if isinstance(f, dict) else None
        if name:
            labels[name] = f"{'block' if name.startswith('blocks.') else 'stage'} {i} (stride {f.get('reduction')})"
    return labels


def create(name: str, pretrained: bool):
    """Build ``timm:<architecture>`` as a LoadedModel (see the module docstring)."""
    import numpy as np
    import torch

    from fvaudit.engine.models.loaded import LoadedModel, ModelError, list_layers, pil_rgb

    timm = _timm()
    arch = arch_of(name)
    if not timm.is_model(arch):
        raise ModelError(f"unknown timm model {arch!r} (timm {timm.__version__} has {len(timm.list_models())} "
                         f"architectures: `timm.list_models('vit_*')` lists some)")
    if pretrained:
        try:
            module = timm.create_model(arch, pretrained=True)
        except Exception as exc:  # LocalEntryNotFoundError offline, HTTP errors, missing files
            raise ModelError(
                f"pretrained weights for timm:{arch} are not cached at {weights_cache(arch)} and could not be "
                f"downloaded: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300].rstrip('.')}. Put "
                f"them there, load a local checkpoint, or ask for random initial weights (pretrained=false)"
            ) from exc
        tag = module.pretrained_cfg.get("tag")
        weights = f"timm:{arch.split('.')[0]}" + (f".{tag}" if tag else "")
    else:
        module = timm.create_model(arch, pretrained=False)
        weights = "random-init"
    module.eval()
    from timm.data import create_transform, resolve_model_data_config

    cfg = resolve_model_data_config(module)
    transform = create_transform(**cfg, is_training=False)
    input_shape = tuple(int(v) for v in cfg["input_size"])
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1)

    def preprocess(a: np.ndarray) -> torch.Tensor:
        return transform(pil_rgb(a))

    return LoadedModel(PREFIX + arch, module, preprocess, class_names(module), input_shape, "timm", weights,
                       layers=list_layers(module, input_shape, stage_labels(module)),
                       normalize=lambda x: (x - mean.to(x.device)) / std.to(x.device))
