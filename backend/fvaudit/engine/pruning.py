"""Pruning defences (SPEC §5, thesis Chapter 4): norm, OTO and vulnerability pruning.

Every function prunes the model it is given **in place** (clone it first to keep the
original: ``models.clone_model``) and returns a :class:`PruneReport`: the weight pruning
rate (zeroed or removed conv/linear weights over all of them, biases excluded, SPEC §5),
the filter pruning rate (conv filters removed or entirely zero over all conv filters),
per-layer counts and, for unstructured pruning, the masks.

Pruned weights must stay zero through the fine-tuning and the attack that follow (SPEC §5).
:func:`attach_masks` makes the masks travel *with the model*: each masked module gets a
non-persistent buffer (so safetensors checkpoints keep their plain keys) and a forward
pre-hook; both survive ``copy.deepcopy``, which is how ``run_attack`` builds its student.
The pre-hook enrols the weight (at its first forward) with a process-wide optimizer step
post-hook that re-applies the mask after **every optimizer step** of any optimizer
holding it. ``run_attack`` and :func:`finetune` therefore need no
mask argument.

Structural removal (:func:`vulnerability_prune`, OTO's ``construct_subnet``) changes
parameter shapes: :func:`pruned_architecture` records them and :func:`rebuild_pruned`
re-creates them on a freshly built base model so a safetensors state dict loads
(``models.apply_checkpoint`` calls it when a checkpoint's shapes differ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

MASK_BUFFER = "fvaudit_prune_mask"


class PruneError(ValueError):
    """A pruning request is invalid (the message names the field: rate, layer, channels...)."""


# ---------------------------------------------------------------- the report

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


def _module_of(model: Any) -> nn.Module:
    """Accept a LoadedModel (anything with ``.module``) or a plain ``nn.Module``."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def prunable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear modules with a weight, in ``named_modules`` order (SPEC §5: prunable)."""
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def _check_rate(rate: Any, name: str = "rate") -> float:
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
    before = before if before is not None else _shapes_before(module)
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


def _shapes_before(module: nn.Module) -> dict[str, tuple[int, int, bool]]:
    return {n: (m.weight.numel(), m.weight.shape[0], _is_conv(m)) for n, m in prunable_layers(module)}


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
    module = _module_of(model)
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
    module = _module_of(model)
    apply_masks(module, masks)
    _ensure_step_hook()
    for name, mask in masks.items():
        owner, _ = _owner(module, name)
        m = mask.to(owner.weight.device, owner.weight.dtype)
        owner.register_buffer(MASK_BUFFER, m, persistent=False)
        if not getattr(owner, "_fvaudit_mask_hooked", False):
            owner.register_forward_pre_hook(_enforce_mask)
            owner._fvaudit_mask_hooked = True
        _ENROLLED[owner.weight] = m


def attached_masks(model: Any) -> dict[str, torch.Tensor]:
    """The masks attached to a model (parameter name → bool tensor, True = kept)."""
    module = _module_of(model)
    return {f"{n}.weight" if n else "weight": getattr(m, MASK_BUFFER).bool()
            for n, m in module.named_modules() if getattr(m, MASK_BUFFER, None) is not None}


def masks_from_zeros(model: Any) -> dict[str, torch.Tensor]:
    """Masks keeping exactly the nonzero conv/linear weights: a masked-pruned checkpoint
    reloaded in a new process (its zeros are the pruned weights) gets its masks back."""
    return {f"{n}.weight": m.weight.detach() != 0 for n, m in prunable_layers(_module_of(model))}


# ---------------------------------------------------------------- norm pruning

@torch.no_grad()
def norm_prune(model: Any, rate: float) -> PruneReport:
    """Class-blind magnitude pruning (See et al. 2016; SPEC §5), in place, masks attached.

    One global threshold over all conv and linear weights (biases excluded): exactly
    ``k = floor(rate·n + 0.5)`` weights are zeroed, the ``k`` smallest by |w|. Ties are
    broken by position: weights are ordered by |w|, then by their index in the
    concatenation of the flattened weights in ``named_modules`` order, and the first
    ``k`` are zeroed (a stable sort), so the count is exact and the choice reproducible.
    """
    rate = _check_rate(rate)
    module = _module_of(model)
    layers = prunable_layers(module)
    if not layers:
        raise PruneError("model: it has no conv or linear weights to prune")
    before = _shapes_before(module)
    flat = torch.cat([m.weight.detach().abs().reshape(-1).float().cpu() for _, m in layers])
    n = flat.numel()
    k = int(math.floor(rate * n + 0.5))
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones(n, dtype=torch.bool)
    keep[order[:k]] = False
    threshold = float(flat[order[k - 1]]) if k > 0 else 0.0
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, m in layers:
        size = m.weight.numel()
        masks[f"{name}.weight"] = keep[offset:offset + size].reshape(m.weight.shape).to(m.weight.device)
        offset += size
    attach_masks(module, masks)
    weight_rate, filter_rate, per_layer = count_pruning(module, before)
    return PruneReport("norm", {"rate": rate}, weight_rate, filter_rate, per_layer, masks,
                       {"threshold": threshold, "zeroed": k, "prunable_weights": n,
                        "tie_rule": "stable sort by |w|, then flat index in named_modules order"})


# ---------------------------------------------------------------- fine-tuning a pruned model

def finetune(model: Any, train_set: Any, phases: Iterable[tuple[int, float]], batch_size: int = 64,
             seed: int = 0, device: str = "cpu", reporter: Any = None) -> list[dict]:
    """Fine-tune a pruned model on the labels (cross-entropy, Adam), in place (SPEC §5).

    ``phases`` is the learning-rate schedule as ``(steps, lr)`` pairs: the thesis' is 10
    epochs at 1e-5 then 10 at 1e-6, scaled down for small models by the caller, who records
    it. Attached masks hold pruned weights at zero after every step. Batches come from
    ``numpy.random.default_rng([seed, step])`` like the attacks'. Returns the per-step
    history (step, lr, loss). ``model`` is a LoadedModel (its preprocessing reads the set).
    """
    import numpy as np

    from fvaudit.engine.images import load_tensor
    from fvaudit.engine.progress import Cancelled, NullReporter

    phases = [(int(s), float(lr)) for s, lr in phases]
    for i, (s, lr) in enumerate(phases):
        if s <= 0 or not (math.isfinite(lr) and lr > 0):
            raise PruneError(f"finetune phases[{i}]: steps must be > 0 and lr > 0, got ({s}, {lr})")
    reporter = reporter or NullReporter()
    module = _module_of(model).to(device)
    ids = np.asarray(train_set.ids)
    if len(ids) == 0:
        raise PruneError("train_set: it is empty")
    labels = torch.as_tensor(np.asarray(train_set.labels), dtype=torch.long)
    opt = torch.optim.Adam(module.parameters(), lr=phases[0][1])
    total = sum(s for s, _ in phases)
    history: list[dict] = []
    reporter.stage("fine-tune", total=total)
    was_training = module.training
    module.train()
    try:
        step = 0
        for steps, lr in phases:
            for g in opt.param_groups:
                g["lr"] = lr
            for _ in range(steps):
                if reporter.cancelled():
                    raise Cancelled(f"cancelled at fine-tune step {step}")
                rng = np.random.default_rng([seed, step])
                pick = np.sort(rng.choice(len(ids), size=min(batch_size, len(ids)), replace=False))
                got, x = load_tensor(train_set, ids[pick], model.preprocess_many)
                loss = nn.functional.cross_entropy(module(x.to(device)), labels[torch.as_tensor(got)].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                history.append({"step": step, "lr": lr, "loss": float(loss.detach())})
                reporter.advance(step, total, loss=history[-1]["loss"])
    finally:
        module.train(was_training)
    return history
