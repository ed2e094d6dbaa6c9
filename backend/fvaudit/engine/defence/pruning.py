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
holding it. ``run_attack`` and :func:`finetune` therefore need no mask argument.

Structural removal (:func:`vulnerability_prune`, OTO's ``construct_subnet``) changes
parameter shapes: :func:`pruned_architecture` records them and :func:`rebuild_pruned`
re-creates them on a freshly built base model so a safetensors state dict loads
(``models.apply_checkpoint`` calls it when a checkpoint's shapes differ).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from fvaudit.engine.data.images import load_tensor
from fvaudit.engine.progress import Cancelled, NullReporter

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
        if not any(h is _enforce_mask for h in owner._forward_pre_hooks.values()):
            owner.register_forward_pre_hook(_enforce_mask)
        _ENROLLED[owner.weight] = m


def detach_masks(model: Any) -> dict[str, torch.Tensor]:
    """Remove attached masks (buffers, hooks, enrolment); returns what was attached.

    Structural pruning calls it before changing shapes (an old-shape mask cannot apply to
    a resized weight) and attaches :func:`masks_from_zeros` afterwards.
    """
    module = _module_of(model)
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
    before = prunable_shapes(module)
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
        masks[f"{name}.weight"] = keep[offset:offset + size].reshape(m.weight.shape).to(m.weight.device).clone()
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
    phases = [(int(s), float(lr)) for s, lr in phases]
    if not phases:
        raise PruneError("finetune phases: at least one (steps, lr) phase is required")
    for i, (s, lr) in enumerate(phases):
        if s <= 0 or not (math.isfinite(lr) and lr > 0):
            raise PruneError(f"finetune phases[{i}]: steps must be > 0 and lr > 0, got ({s}, {lr})")
    reporter = reporter or NullReporter()
    module = _module_of(model).to(device)
    ids, labels = _train_arrays(train_set)
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
                    raise Cancelled(f"at fine-tune step {step}")
                x, y = _batch(model, train_set, ids, labels, step, seed, batch_size)
                loss = nn.functional.cross_entropy(module(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                history.append({"step": step, "lr": lr, "loss": float(loss.detach())})
                reporter.advance(step, total, loss=history[-1]["loss"])
    finally:
        module.train(was_training)
    return history


def _batch(model: Any, train_set: Any, ids: Any, labels: torch.Tensor, step: int, seed: int, batch_size: int):
    """The training batch of ``step``: ``default_rng([seed, step])`` picks it (resumable, like the attacks)."""
    rng = np.random.default_rng([seed, step])
    pick = np.sort(rng.choice(len(ids), size=min(batch_size, len(ids)), replace=False))
    got, x = load_tensor(train_set, ids[pick], model.preprocess_many)
    return x, labels[torch.as_tensor(got)]


def _train_arrays(train_set: Any) -> tuple[Any, torch.Tensor]:
    ids = np.asarray(train_set.ids)
    if len(ids) == 0:
        raise PruneError("train_set: it is empty")
    return ids, torch.as_tensor(np.asarray(train_set.labels), dtype=torch.long)


def _refresh_layers(model: Any) -> None:
    """A LoadedModel's layer list (unit counts) after a structural change."""
    if hasattr(model, "layers") and hasattr(model, "input_shape"):
        from fvaudit.engine.models.loading import LAYER_LABELS, list_layers

        model.layers = list_layers(model.module, model.input_shape, LAYER_LABELS.get(getattr(model, "name", ""), {}))


# ---------------------------------------------------------------- OTO (Only Train Once, HESSO)

#: HESSO's group-importance criteria per mode. "filter": OTO's default mix over its
#: zero-invariant groups (a group = one filter with its bias/BN and the next layer's inputs
#: from it). "weight": OTO's own ``avg_magnitude`` criterion alone (group norm divided by
#: the group's size), which ranks groups by importance *per weight* and so prefers removing
#: the large groups: at a given group sparsity more weights go. OTO 3.0.1 has no
#: unstructured (per-weight) mode ("erase" raises NotImplementedError; DHSPG/LHSPG are not in
#: the wheel), so the weight-focused setting is this criterion over the same groups.
OTO_CRITERIA = {
    "filter": "default",
    "weight": {"avg_magnitude": 1.0},
}


@dataclass
class HessoRun:
    """OTO after HESSO training, before ``construct_subnet``: the model is full-size, its
    redundant groups exactly zero (the "full group sparse" model)."""

    oto: Any
    optimizer: Any
    mode: str
    target_group_sparsity: float
    group_sparsity: float
    zero_groups: int
    total_groups: int
    history: list[dict]
    settings: dict


def hesso_train(model: Any, train_set: Any, group_sparsity: float, mode: str = "filter", steps: int = 200,
                lr: float = 1e-4, variant: str = "adam", batch_size: int = 64, pruning_fraction: float = 0.5,
                pruning_periods: int = 5, seed: int = 0, device: str = "cpu", reporter: Any = None) -> HessoRun:
    """Train ``model`` (a LoadedModel) in place with OTO's HESSO towards a target group sparsity.

    Scaled schedule (recorded in ``settings``): ``steps`` cross-entropy steps on the labels;
    HESSO prunes from step 1 over the first ``pruning_fraction`` of them, in
    ``pruning_periods`` periods (each period's redundant groups shrink linearly to zero),
    then keeps training with those groups held at zero.
    """
    group_sparsity = _check_rate(group_sparsity, "group_sparsity")
    if mode not in OTO_CRITERIA:
        raise PruneError(f"mode: must be one of {sorted(OTO_CRITERIA)}, not {mode!r}")
    if not isinstance(steps, int) or steps < 2:
        raise PruneError(f"steps: must be an integer ≥ 2, got {steps!r}")
    if not (0.0 < pruning_fraction <= 1.0):
        raise PruneError(f"pruning_fraction: must lie in (0, 1], got {pruning_fraction}")
    from fvaudit.engine.defence import oto_compat

    oto_pkg = oto_compat.load_oto()
    reporter = reporter or NullReporter()
    module = _module_of(model).to(device)
    ids, labels = _train_arrays(train_set)
    pruning_steps = max(1, int(steps * pruning_fraction))
    periods = max(1, min(int(pruning_periods), pruning_steps))
    torch.manual_seed(seed)
    dummy = torch.zeros((1, *model.input_shape), device=device)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):       # OTO prints its progress
        oto = oto_pkg.OTO(model=module, dummy_input=dummy)
        opt = oto.hesso(variant=variant, lr=lr, target_group_sparsity=group_sparsity, start_pruning_step=0,
                        pruning_steps=pruning_steps, pruning_periods=periods,
                        importance_score_criteria=OTO_CRITERIA[mode])
    history: list[dict] = []
    reporter.stage(f"OTO HESSO ({mode})", total=steps)
    module.train()
    try:
        for step in range(steps):
            if reporter.cancelled():
                raise Cancelled(f"at HESSO step {step}")
            x, y = _batch(model, train_set, ids, labels, step, seed, batch_size)
            loss = nn.functional.cross_entropy(module(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append({"step": step + 1, "loss": float(loss.detach()), "group_sparsity": float(opt.curr_group_sparsity)})
            reporter.advance(step + 1, steps, loss=history[-1]["loss"], group_sparsity=history[-1]["group_sparsity"])
    finally:
        module.eval()
    settings = {"steps": steps, "lr": lr, "variant": variant, "batch_size": batch_size, "seed": seed,
                "pruning_steps": pruning_steps, "pruning_periods": periods, "criteria": OTO_CRITERIA[mode],
                "optimizer": "HESSO (only-train-once 3.0.1)"}
    return HessoRun(oto, opt, mode, group_sparsity, float(opt.curr_group_sparsity), int(opt.curr_num_zero_groups),
                    int(opt.total_num_groups), history, settings)


def construct_subnet(run: HessoRun) -> None:
    """OTO's ``construct_subnet``: remove the zero groups from the model, in place.

    OTO also pickles the compressed model to a directory; that goes to a temporary
    directory that is deleted (fvaudit saves weights as safetensors, never pickles).
    """
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fvaudit-oto-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        run.oto.construct_subnet(out_dir=tmp, save_full_group_sparse_model=False)


def oto_prune(model: Any, train_set: Any, group_sparsity: float, mode: str = "filter", steps: int = 200,
              lr: float = 1e-4, variant: str = "adam", batch_size: int = 64, pruning_fraction: float = 0.5,
              pruning_periods: int = 5, seed: int = 0, device: str = "cpu", reporter: Any = None) -> PruneReport:
    """OTO structured pruning (Chen et al. 2023, HESSO; SPEC §5, Tables 4.2/4.3), in place.

    HESSO trains ``model`` (a LoadedModel) on ``train_set`` to the target group sparsity
    (:func:`hesso_train`), then OTO's ``construct_subnet`` removes the zero groups. The
    report gives the target and reached group sparsity and the resulting filter and weight
    pruning rates against the original shapes. ``mode``: see :data:`OTO_CRITERIA`.
    """
    before = prunable_shapes(_module_of(model))
    run = hesso_train(model, train_set, group_sparsity, mode, steps, lr, variant, batch_size, pruning_fraction,
                      pruning_periods, seed, device, reporter)
    had_masks = detach_masks(model)
    construct_subnet(run)
    if had_masks:
        attach_masks(model, masks_from_zeros(model))
    _refresh_layers(model)
    weight_rate, filter_rate, per_layer = count_pruning(_module_of(model), before)
    return PruneReport(f"oto-{mode}", {"group_sparsity": run.target_group_sparsity, "mode": mode}, weight_rate,
                       filter_rate, per_layer, {},
                       {"group_sparsity_reached": run.group_sparsity, "zero_groups": run.zero_groups,
                        "total_groups": run.total_groups, "final_loss": run.history[-1]["loss"], **run.settings})


# ---------------------------------------------------------------- vulnerability pruning

def _execution_order(module: nn.Module, input_shape: tuple[int, ...], names: list[str]) -> list[str]:
    """``names`` (modules with one tensor output) in the order one forward pass first calls them."""
    from fvaudit.engine.scan.activations import run_captured

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            outputs, _ = run_captured(module, torch.zeros((1, *input_shape), device=device), names, need_logits=True)
    finally:
        module.train(was_training)
    return list(outputs)          # filled by the hooks as they fire


def producing_layer(model: Any, layer: str, input_shape: tuple[int, ...] | None = None) -> str:
    """The conv (or linear) whose output channels are ``layer``'s channels.

    ``layer`` as the model registry names it (``relu3`` in fmnist-cnn, or a display label):
    a conv/linear is its own producer; otherwise the last conv/linear that ran before it
    in a forward pass (through ReLU, BN, pooling), checked to have the same width.
    """
    module = _module_of(model)
    width = None
    if hasattr(model, "layer") and hasattr(model, "layers"):
        try:
            info = model.layer(layer)
        except ValueError as exc:
            raise PruneError(f"layer: {exc}") from None
        layer, width = info.name, info.units
        input_shape = model.input_shape
    names = dict(module.named_modules())
    if layer not in names or not layer:
        raise PruneError(f"layer: unknown layer {layer!r}")
    if isinstance(names[layer], (nn.modules.conv._ConvNd, nn.Linear)):
        return layer
    if input_shape is None:
        raise PruneError("input_shape: needed to find the conv producing a non-conv layer of a plain module")
    try:
        order = _execution_order(module, tuple(input_shape), [layer] + [n for n, _ in prunable_layers(module)])
    except ValueError as exc:          # ModelError: the layer does not output one tensor
        raise PruneError(f"layer: {exc}") from None
    if layer not in order:
        raise PruneError(f"layer: {layer!r} is not called in the forward pass (a container?)")
    for name in reversed(order[:order.index(layer)]):
        m = names[name]
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            if width is not None and m.weight.shape[0] != width:
                raise PruneError(f"layer: {layer} has {width} channels but the last conv before it, {name}, "
                                 f"has {m.weight.shape[0]}; name the conv itself")
            return name
    raise PruneError(f"layer: no conv or linear layer runs before {layer!r}")


def _check_channels(channels: Any, width: int, layer: str) -> list[int]:
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise PruneError(f"channels: must be a list of channel indices, got {channels!r}")
    chans = list(channels)
    bad = [c for c in chans if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
    if bad:
        raise PruneError(f"channels: not integers: {bad[:10]}")
    out_of_range = sorted({int(c) for c in chans if not 0 <= int(c) < width})
    if out_of_range:
        raise PruneError(f"channels: {out_of_range[:20]} out of range for {layer} (it has {width} channels, 0..{width - 1})")
    seen: set[int] = set()
    dup = sorted({int(c) for c in chans if int(c) in seen or seen.add(int(c))})
    if dup:
        raise PruneError(f"channels: duplicate indices {dup[:20]}")
    if not chans:
        raise PruneError("channels: at least one channel to remove is required")
    if len(chans) >= width:
        raise PruneError(f"channels: removing all {width} channels of {layer} would leave nothing")
    return sorted(int(c) for c in chans)


def vulnerability_prune(model: Any, layer: str, channels: Iterable[int],
                        input_shape: tuple[int, ...] | None = None) -> PruneReport:
    """Remove the given channels of ``layer`` structurally, in place (SPEC §5, Table 4.4).

    The channels are those with the highest CLIP-δ in a push-down attack on the layer
    (chosen by the caller). ``layer`` is mapped to the conv producing it
    (:func:`producing_layer`); torch-pruning's DependencyGraph removes the filters, their
    biases, any BN entries and the next layers' input slices fed by them (through
    ``flatten``, too). Couplings that force more removals (residual adds) are refused:
    the request would no longer be "these channels".
    """
    module = _module_of(model)
    shape = tuple(model.input_shape) if hasattr(model, "input_shape") else input_shape
    conv_name = producing_layer(model, layer, shape)
    conv = module.get_submodule(conv_name)
    width = conv.weight.shape[0]
    chans = _check_channels(channels, width, layer)
    if shape is None:
        raise PruneError("input_shape: required for a plain module")
    last = _execution_order(module, shape, [n for n, _ in prunable_layers(module)])[-1]
    if last == conv_name:
        raise PruneError(f"layer: {layer} is the model's output layer ({conv_name}); its outputs are the classes")
    before = prunable_shapes(module)
    had_masks = detach_masks(module)
    try:
        touched = _remove_channels(module, conv_name, chans, shape)
    except PruneError:
        if had_masks:
            attach_masks(module, had_masks)
        raise
    if had_masks:            # earlier (norm) pruning stays held in the kept slices
        attach_masks(module, masks_from_zeros(module))
    _refresh_layers(model)
    weight_rate, filter_rate, per_layer = count_pruning(module, before)
    return PruneReport("vulnerability", {"layer": layer, "channels": chans, "n": len(chans)}, weight_rate,
                       filter_rate, per_layer, {},
                       {"conv": conv_name, "width_before": width, "width_after": width - len(chans),
                        "removed_from": touched})


def _remove_channels(module: nn.Module, conv_name: str, chans: list[int], shape: tuple[int, ...]) -> list[dict]:
    """torch-pruning on a copy; once the copy runs, give ``module`` its shapes and weights."""
    import torch_pruning as tp

    # prune a copy first: torch-pruning can leave a model that no longer runs (a channel added
    # to the network's input, say); the original is only changed once the copy has run
    work = copy.deepcopy(module).eval()
    work_conv = work.get_submodule(conv_name)
    dummy = torch.zeros((1, *shape), device=work_conv.weight.device)
    dg = tp.DependencyGraph().build_dependency(work, example_inputs=dummy, verbose=False)
    fn = tp.prune_conv_out_channels if _is_conv(work_conv) else tp.prune_linear_out_channels
    group = dg.get_pruning_group(work_conv, fn, idxs=chans)
    names = {m: n for n, m in work.named_modules()}
    touched = []
    for dep, idxs in group.items:
        target = dep.target.module
        if target not in names:               # torch-pruning's stand-ins for relu, pool, flatten
            continue
        op = getattr(dep.handler, "__name__", type(dep.handler).__name__)
        touched.append({"module": names[target], "op": op, "n": len(idxs)})
        if op == "prune_out_channels" and target is not work_conv and len(idxs) and \
                isinstance(target, (nn.modules.conv._ConvNd, nn.Linear)):
            raise PruneError(f"layer: removing channels of {conv_name} would also remove output channels of "
                             f"{names[target]} (coupled, e.g. by a residual add); not supported")
    group.prune()
    try:
        with torch.no_grad():
            work(dummy)
    except RuntimeError as exc:
        raise PruneError(f"layer: the model does not run after removing channels of {conv_name} "
                         f"(coupled to a tensor that cannot be pruned, e.g. the input of a residual add): "
                         f"{str(exc).splitlines()[0][:200]}") from None
    rebuild_pruned(module, pruned_architecture(work))
    module.load_state_dict(work.state_dict())
    return touched


# ---------------------------------------------------------------- saving and loading structurally pruned models

ARCH_FORMAT = "fvaudit-pruned-shapes/1"


def pruned_architecture(model: Any) -> dict:
    """The shape of every tensor in the model's state dict: all a structurally pruned model
    needs, on top of its base architecture, to be rebuilt before its weights load."""
    return {"format": ARCH_FORMAT,
            "shapes": {k: list(v.shape) for k, v in _module_of(model).state_dict().items()}}


def _resize(mod: nn.Module, local: str, shape: tuple[int, ...]) -> None:
    old = getattr(mod, local)
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if local in mod._parameters:
        mod._parameters[local] = nn.Parameter(new, requires_grad=old.requires_grad)
    else:
        mod._buffers[local] = new


def _fix_attributes(name: str, mod: nn.Module) -> None:
    """Update a resized module's size attributes from its (new) weight shapes."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
        out_c, in_per_group = mod.weight.shape[0], mod.weight.shape[1]
        if depthwise:
            mod.groups = out_c
        mod.out_channels, mod.in_channels = out_c, in_per_group * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        mod.num_features = (mod.weight if mod.weight is not None else mod.running_mean).shape[0]
    elif isinstance(mod, nn.LayerNorm):
        mod.normalized_shape = tuple(mod.weight.shape)
    elif isinstance(mod, nn.GroupNorm):
        mod.num_channels = mod.weight.shape[0]
    else:
        raise PruneError(f"checkpoint: cannot resize {name} ({type(mod).__name__}): only conv, linear and norm "
                         "layers can be structurally pruned")


def rebuild_pruned(base_model: Any, record: dict) -> list[str]:
    """Give a freshly built base model the pruned shapes in ``record``, in place.

    ``record`` is :func:`pruned_architecture`'s output or a plain ``{state-dict key: shape}``
    (a checkpoint's own shapes). Only tensors whose shape differs are replaced (with
    uninitialised ones: the checkpoint's weights fill them). Returns the resized modules.
    """
    module = _module_of(base_model)
    shapes = record.get("shapes", record) if isinstance(record, dict) else None
    if not isinstance(shapes, dict):
        raise PruneError("record: expected pruned_architecture() output or a {name: shape} dict")
    state = module.state_dict()
    unknown = [k for k in shapes if k not in state]
    if unknown:
        raise PruneError(f"record: keys not in the base architecture: {unknown[:5]}")
    layers = prunable_layers(module)
    if layers:     # the classifier head (last conv/linear defined) keeps its outputs: pruning never removes classes
        head, head_mod = layers[-1]
        key = f"{head}.weight" if head else "weight"
        if key in shapes and int(shapes[key][0]) != head_mod.weight.shape[0]:
            raise PruneError(f"record: the output layer {head} would change from {head_mod.weight.shape[0]} to "
                             f"{shapes[key][0]} outputs: not a pruned version of this architecture")
    changed: dict[str, nn.Module] = {}
    for key, shape in shapes.items():
        if tuple(state[key].shape) == tuple(shape):
            continue
        mod_name, _, local = key.rpartition(".")
        mod = module.get_submodule(mod_name) if mod_name else module
        _resize(mod, local, tuple(int(s) for s in shape))
        changed[mod_name] = mod
    for name, mod in changed.items():
        _fix_attributes(name, mod)
    _refresh_layers(base_model)
    return sorted(changed)
