"""What a pruning did and how its zeros stay zero (SPEC §5).

:class:`PruneReport`: the weight pruning rate (zeroed or removed conv/linear weights over
all of them, biases excluded), the filter pruning rate (conv filters removed or entirely
zero over all conv filters), per-layer counts and, for unstructured pruning, the masks.

Pruned weights must stay zero through the fine-tuning and the attack that follow.
:func:`attach_masks` makes the masks travel *with the model*: each masked module gets a
non-persistent buffer (so safetensors checkpoints keep their plain keys) and a forward
pre-hook; both survive ``copy.deepcopy``, which is how ``run_attack`` builds its student.
The pre-hook enrols the weight (at its first forward) with a process-wide optimizer step
post-hook that re-applies the mask after **every optimizer step** of any optimizer
holding it. ``run_attack`` and :func:`~fvaudit.engine.defence.finetune.finetune` therefore
need no mask argument.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from fvaudit.engine.models.surgery import PruneError, is_conv, module_of, prunable_layers

MASK_BUFFER = "fvaudit_prune_mask"


@dataclass
class PruneReport:
    """What a pruning did (Tables 4.1–4.4: target, weight and filter pruning rates).

    ``layers`` maps a conv/linear module name to ``{"weights", "zeroed", "filters",
    "filters_removed"}``, counted against the layer's shape *before* pruning (a removed
    weight counts as zeroed; a linear layer's "filters" are its output features).
    ``masks`` maps a parameter name to a bool tensor (True = kept); empty after structural
    removal, where nothing is left to hold at zero.
    """

    method: str
    target: dict[str, Any]
    weight_rate: float
    filter_rate: float
    layers: dict[str, dict[str, int]]
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_total(self) -> int:
        return sum(v["weights"] for v in self.layers.values())

    @property
    def weights_zeroed(self) -> int:
        return sum(v["zeroed"] for v in self.layers.values())

    def to_json(self) -> dict:
        """Everything but the masks (JSON-serialisable)."""
        return {"method": self.method, "target": dict(self.target), "weight_rate": self.weight_rate,
                "filter_rate": self.filter_rate, "weights_total": self.weights_total,
                "weights_zeroed": self.weights_zeroed, "layers": {k: dict(v) for k, v in self.layers.items()},
                "details": dict(self.details)}


def check_rate(rate: Any, name: str = "rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0.0 < rate < 1.0:
        raise PruneError(f"{name}: must be a number strictly between 0 and 1 (a fraction, e.g. 0.5), got {rate!r}")
    return float(rate)


def count_pruning(module: nn.Module, before: dict[str, tuple[int, int, bool]] | None = None) -> tuple[float, float, dict]:
    """(weight rate, filter rate, per-layer counts) of a module as it is now.

    ``before`` maps layer name → (weights, filters, is_conv) of the unpruned model, so that removed
    weights and filters count as pruned; layers absent now (a whole layer removed) count
    fully pruned. A filter is pruned when removed or when all its weights are zero.
    """
    now = dict(prunable_layers(module))
    before = before if before is not None else prunable_shapes(module)
    layers: dict[str, dict[str, int]] = {}
    for name, (w0, f0, _) in before.items():
        m = now.get(name)
        if m is None:
            layers[name] = {"weights": w0, "zeroed": w0, "filters": f0, "filters_removed": f0}
            continue
        w = m.weight.detach()
        nonzero = int(torch.count_nonzero(w))
        dead_rows = int((w.reshape(w.shape[0], -1) == 0).all(dim=1).sum())
        layers[name] = {"weights": w0, "zeroed": w0 - nonzero, "filters": f0,
                        "filters_removed": f0 - w.shape[0] + dead_rows}
    total_w = sum(v["weights"] for v in layers.values())
    conv = [v for n, v in layers.items() if before[n][2]]
    total_f = sum(v["filters"] for v in conv)
    weight_rate = sum(v["zeroed"] for v in layers.values()) / total_w if total_w else 0.0
    filter_rate = sum(v["filters_removed"] for v in conv) / total_f if total_f else 0.0
    return weight_rate, filter_rate, layers


def prunable_shapes(module: nn.Module) -> dict[str, tuple[int, int, bool]]:
    """Layer name → (weights, filters, is_conv): the ``before`` of :func:`count_pruning`."""
    return {n: (m.weight.numel(), m.weight.shape[0], is_conv(m)) for n, m in prunable_layers(module)}


# ---------------------------------------------------------------- masks that travel with the model

#: weight tensor → bool mask; filled by the forward pre-hook, read after each optimizer step.
_ENROLLED: WeakIdKeyDictionary = WeakIdKeyDictionary()
_STEP_HOOK = None


def _after_step(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
    """Process-wide optimizer step post-hook: re-zero every enrolled masked weight (SPEC §5)."""
    if not len(_ENROLLED):
        return
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                mask = _ENROLLED.get(p)
                if mask is not None:
                    p.mul_(mask)


def _enforce_mask(module: nn.Module, _inputs: Any) -> None:
    """Forward pre-hook: enrol the module's weight with the step post-hook (masking it once).

    Runs on deep copies too (hooks and buffers are copied), which enrols the copy's weight
    before its first optimizer step. It does not mask on every forward: an in-place edit
    between two forwards of one graph would invalidate the first one's backward.
    """
    mask = getattr(module, MASK_BUFFER, None)
    if mask is None:
        return
    w = module.weight
    if mask.device != w.device:
        mask = mask.to(w.device)
        module._buffers[MASK_BUFFER] = mask
    if _ENROLLED.get(w) is not mask:  # first forward of this weight (e.g. of a deep copy)
        _ENROLLED[w] = mask
        with torch.no_grad():  # before any graph uses it: later in-place edits would break backward
            w.mul_(mask)


def _ensure_step_hook() -> None:
    global _STEP_HOOK
    if _STEP_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _STEP_HOOK = register_optimizer_step_post_hook(_after_step)


def _owner(module: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = param_name.rpartition(".")
    try:
        owner = module.get_submodule(mod_name) if mod_name else module
    except AttributeError:
        raise PruneError(f"masks: no module {mod_name!r} in the model (parameter {param_name})") from None
    if attr != "weight" or not isinstance(getattr(owner, "weight", None), torch.Tensor):
        raise PruneError(f"masks: {param_name} is not the weight of a module (only weights are masked)")
    return owner, attr


def apply_masks(model: Any, masks: dict[str, torch.Tensor]) -> None:
    """Zero, once, every weight whose mask is False (``masks``: parameter name → bool tensor)."""
    module = module_of(model)
    with torch.no_grad():
        for name, mask in masks.items():
            owner, _ = _owner(module, name)
            if tuple(mask.shape) != tuple(owner.weight.shape):
                raise PruneError(f"masks: {name} has shape {tuple(owner.weight.shape)}, its mask {tuple(mask.shape)}")
            owner.weight.mul_(mask.to(owner.weight.device, owner.weight.dtype))


def attach_masks(model: Any, masks: dict[str, torch.Tensor]) -> None:
    """Hold the masked weights at zero from now on, through any optimizer (SPEC §5).

    Applies the masks, stores each as a non-persistent buffer (``state_dict`` unchanged)
    with a forward pre-hook on its module, and enrols the weights with the optimizer step
    post-hook. Attaching again replaces the module's mask.
    """
    module = module_of(model)
    apply_masks(module, masks)
    _ensure_step_hook()
    for name, mask in masks.items():
        owner, _ = _owner(module, name)
        m = mask.to(owner.weight.device, owner.weight.dtype)
        owner.register_buffer(MASK_BUFFER, m, persistent=False)
        if not any(h is _enforce_mask for h in owner._forward_pre_hooks.values()):
            owner.register_forward_pre_hook(_enforce_mask)
        _ENROLLED[owner.weight] = m


def detach_masks(model: Any) -> dict[str, torch.Tensor]:
    """Remove attached masks (buffers, hooks, enrolment); returns what was attached.

    Structural pruning calls it before changing shapes (an old-shape mask cannot apply to
    a resized weight) and attaches :func:`masks_from_zeros` afterwards.
    """
    module = module_of(model)
    had = attached_masks(module)
    for m in module.modules():
        if MASK_BUFFER in m._buffers:
            del m._buffers[MASK_BUFFER]
            _ENROLLED.pop(m.weight, None)
        for key in [k for k, h in m._forward_pre_hooks.items() if h is _enforce_mask]:
            del m._forward_pre_hooks[key]
    return had


def attached_masks(model: Any) -> dict[str, torch.Tensor]:
    """The masks attached to a model (parameter name → bool tensor, True = kept)."""
    module = module_of(model)
    return {f"{n}.weight" if n else "weight": getattr(m, MASK_BUFFER).bool()
            for n, m in module.named_modules() if getattr(m, MASK_BUFFER, None) is not None}


def masks_from_zeros(model: Any) -> dict[str, torch.Tensor]:
    """Masks keeping exactly the nonzero conv/linear weights: a masked-pruned checkpoint
    reloaded in a new process (its zeros are the pruned weights) gets its masks back."""
    return {f"{n}.weight": m.weight.detach() != 0 for n, m in prunable_layers(module_of(model))}
