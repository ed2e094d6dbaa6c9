"""Make ``import torchvision`` work when its C++ extension cannot load.

PyPI's torchvision 0.28.0 wheel is a CUDA build. Next to the CPU torch 2.13.0 wheel its
extension fails to load and torchvision's import dies with
``RuntimeError: operator torchvision::nms does not exist`` because it registers fake
kernels for ``nms``/``qnms`` whose schemas were never defined. Defining those two
schemas before the first torchvision import is enough for models, transforms and
``feature_extraction`` (see ../shared/ENVIRONMENT.md). With a matching torch/torchvision
pair the real operator exists and this module does nothing.

Import this module before anything that imports torchvision (open_clip, timm).
"""
from __future__ import annotations

import torch

#: True when this module had to define the schemas (the extension did not load).
GUARD_APPLIED = False
_LIBRARY = None  # keep the Library object alive: dropping it unregisters the schemas


def apply() -> bool:
    """Define torchvision's ``nms``/``qnms`` schemas when missing; return whether it did."""
    global GUARD_APPLIED, _LIBRARY
    try:
        torch.ops.torchvision.nms  # noqa: B018  (attribute access is the probe)
        return GUARD_APPLIED
    except (AttributeError, RuntimeError):
        pass
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    GUARD_APPLIED = True
    return True


apply()
