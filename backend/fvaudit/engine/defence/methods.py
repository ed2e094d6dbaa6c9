"""The pruning methods (SPEC §5, thesis Chapter 4): norm (global magnitude), OTO (HESSO,
filter- or weight-focused) and vulnerability pruning (remove given channels of a layer).

Every method prunes the model it is given **in place** (clone it first to keep the
original) and returns a :class:`~fvaudit.engine.defence.masks.PruneReport`. The one entry
point that also fine-tunes, measures and records is :func:`fvaudit.engine.defence.prune.prune`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from fvaudit.engine.defence.finetune import StepBatches
from fvaudit.engine.defence.masks import (PruneReport, attach_masks, check_rate, count_pruning, detach_masks,
                                          masks_from_zeros, prunable_shapes)
from fvaudit.engine.models.surgery import (PruneError, module_of, prunable_layers, refresh_layers,
                                           remove_channels)
from fvaudit.engine.progress import Cancelled, NullReporter
from fvaudit.engine.scans.activations import run_captured

@torch.no_grad()
def norm_prune(model: Any, rate: float) -> PruneReport:
    """Class-blind magnitude pruning (See et al. 2016; SPEC §5), in place, masks attached.

    One global threshold over all conv and linear weights (biases excluded): exactly
    ``k = floor(rate·n + 0.5)`` weights are zeroed, the ``k`` smallest by |w|. Ties are
    broken by position: weights are ordered by |w|, then by their index in the
    concatenation of the flattened weights in ``named_modules`` order, and the first
    ``k`` are zeroed (a stable sort), so the count is exact and the choice reproducible.
    """
    rate = check_rate(rate)
    module = module_of(model)
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
    group_sparsity = check_rate(group_sparsity, "group_sparsity")
    if mode not in OTO_CRITERIA:
        raise PruneError(f"mode: must be one of {sorted(OTO_CRITERIA)}, not {mode!r}")
    if not isinstance(steps, int) or steps < 2:
        raise PruneError(f"steps: must be an integer ≥ 2, got {steps!r}")
    if not (0.0 < pruning_fraction <= 1.0):
        raise PruneError(f"pruning_fraction: must lie in (0, 1], got {pruning_fraction}")
    from fvaudit.engine.defence import oto_compat

    oto_pkg = oto_compat.load_oto()
    reporter = reporter or NullReporter()
    module = module_of(model).to(device)
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
    batches = iter(StepBatches(model, train_set, steps, seed, batch_size))
    reporter.stage(f"OTO HESSO ({mode})", total=steps)
    module.train()
    try:
        for step in range(steps):
            if reporter.cancelled():
                raise Cancelled(f"at HESSO step {step}")
            x, y = next(batches)
            loss = nn.functional.cross_entropy(module(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append({"step": step + 1, "loss": float(loss.detach()), "group_sparsity": float(opt.curr_group_sparsity)})
            reporter.advance(step + 1, steps, loss=history[-1]["loss"], group_sparsity=history[-1]["group_sparsity"])
    finally:
        batches.close()
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
    before = prunable_shapes(module_of(model))
    run = hesso_train(model, train_set, group_sparsity, mode, steps, lr, variant, batch_size, pruning_fraction,
                      pruning_periods, seed, device, reporter)
    had_masks = detach_masks(model)
    construct_subnet(run)
    if had_masks:
        attach_masks(model, masks_from_zeros(model))
    refresh_layers(model)
    weight_rate, filter_rate, per_layer = count_pruning(module_of(model), before)
    return PruneReport(f"oto-{mode}", {"group_sparsity": run.target_group_sparsity, "mode": mode}, weight_rate,
                       filter_rate, per_layer, {},
                       {"group_sparsity_reached": run.group_sparsity, "zero_groups": run.zero_groups,
                        "total_groups": run.total_groups, "final_loss": run.history[-1]["loss"], **run.settings})


# ---------------------------------------------------------------- vulnerability pruning

def _execution_order(module: nn.Module, input_shape: tuple[int, ...], names: list[str]) -> list[str]:
    """``names`` (modules with one tensor output) in the order one forward pass first calls them."""
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
    module = module_of(model)
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
    module = module_of(model)
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
        touched = remove_channels(module, conv_name, chans, shape)
    except PruneError:
        if had_masks:
            attach_masks(module, had_masks)
        raise
    if had_masks:            # earlier (norm) pruning stays held in the kept slices
        attach_masks(module, masks_from_zeros(module))
    refresh_layers(model)
    weight_rate, filter_rate, per_layer = count_pruning(module, before)
    return PruneReport("vulnerability", {"layer": layer, "channels": chans, "n": len(chans)}, weight_rate,
                       filter_rate, per_layer, {},
                       {"conv": conv_name, "width_before": width, "width_after": width - len(chans),
                        "removed_from": touched})
