"""Structural surgery on a model's architecture (SPEC §5): remove channels, record the
pruned shapes, and rebuild them on a freshly built base model so a pruned checkpoint loads.

Lives with the models (not the defences) because loading a checkpoint needs it: a
checkpoint whose tensors are narrower than the architecture's is a structurally pruned
model (:func:`fvaudit.engine.models.checkpoints.apply_checkpoint` calls
:func:`rebuild_pruned`). The pruning methods (:mod:`fvaudit.engine.defence`) call
:func:`remove_channels` and raise the same :class:`PruneError`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

class PruneError(ValueError):
    """A pruning request is invalid (the message names the field: rate, layer, channels...)."""


def module_of(model: Any) -> nn.Module:
    """Accept a LoadedModel (anything with ``.module``) or a plain ``nn.Module``."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def prunable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear modules with a weight, in ``named_modules`` order (SPEC §5: prunable)."""
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def refresh_layers(model: Any) -> None:
    """A LoadedModel's layer list (unit counts) after a structural change; nothing for a plain module."""
    if hasattr(model, "refresh_layers"):
        model.refresh_layers()


def remove_channels(module: nn.Module, conv_name: str, chans: list[int], shape: tuple[int, ...]) -> list[dict]:
    """torch-pruning on a copy; once the copy runs, give ``module`` its shapes and weights."""
    import torch_pruning as tp

    # prune a copy first: torch-pruning can leave a model that no longer runs (a channel added
    # to the network's input, say); the original is only changed once the copy has run
    work = copy.deepcopy(module).eval()
    work_conv = work.get_submodule(conv_name)
    dummy = torch.zeros((1, *shape), device=work_conv.weight.device)
    dg = tp.DependencyGraph().build_dependency(work, example_inputs=dummy, verbose=False)
    fn = tp.prune_conv_out_channels if is_conv(work_conv) else tp.prune_linear_out_channels
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
            "shapes": {k: list(v.shape) for k, v in module_of(model).state_dict().items()}}


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
    module = module_of(base_model)
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
    refresh_layers(base_model)
    return sorted(changed)
