"""Checkpoints read without executing code, and written without pickle.

Reading: safetensors, or a ``.pt`` through ``torch.load(weights_only=True)``; an uploaded
``.pt`` is screened opcode by opcode first (:func:`screen_pickle_checkpoint`: defence in
depth, both must agree). A checkpoint whose tensors are narrower than the architecture's
is a structurally pruned model: the architecture is resized to it first
(:mod:`fvaudit.engine.models.surgery`). Writing: safetensors, atomically.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from fvaudit.engine.models.loaded import ModelError
from fvaudit.engine.models.surgery import PruneError, rebuild_pruned

#: globals a weights-only PyTorch pickle may name (module prefix, or exact module.name)
_SAFE_PREFIXES = ("torch.", "collections.")
_SAFE_EXACT = {"torch", "collections", "_codecs.encode", "builtins.set", "builtins.frozenset", "builtins.tuple",
               "builtins.list", "builtins.dict", "builtins.int", "builtins.float", "builtins.bool", "builtins.str",
               "builtins.bytes", "builtins.bytearray", "builtins.complex", "builtins.slice"}
_UNSAFE_IN_TORCH = ("torch.load", "torch.hub", "torch.package", "torch.jit", "torch._dynamo", "torch.ops",
                    "torch.utils.cpp_extension", "torch.compile", "torch.serialization.load", "torch.autograd")


class UnsafeCheckpoint(ValueError):
    """An uploaded pickle names something other than tensors and plain containers."""


class _Stub:
    """Stands in for every global while screening: calling, building or indexing it does nothing."""

    def __init__(self, *a, **k) -> None:
        pass

    def __call__(self, *a, **k):
        return _Stub()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, x) -> None:
        pass

    def extend(self, xs) -> None:
        pass


def _pickle_globals(data: bytes) -> list[str]:
    """Every global a pickle references, as the unpickler itself resolves them (GLOBAL,
    STACK_GLOBAL, INST, OBJ, EXT*), with each replaced by an inert stub: nothing is imported
    and nothing named in the pickle is called."""
    found: list[str] = []

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            found.append(f"{module}.{name}")
            return _Stub

        def persistent_load(self, pid):
            return None

    Recording(io.BytesIO(data)).load()
    return found


def screen_pickle_checkpoint(path: Path) -> None:
    """Refuse a ``.pt`` whose pickle names anything but tensors and plain containers.

    Defence in depth before ``torch.load(weights_only=True)``: both must agree.
    """
    raw = path.read_bytes()
    pickles: list[bytes] = []
    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            for n in zf.namelist():
                if n.endswith(".pkl"):
                    pickles.append(zf.read(n))
        if not pickles:
            raise UnsafeCheckpoint("the archive holds no pickle (not a PyTorch checkpoint)")
    else:
        pickles.append(raw)
    for data in pickles:
        try:
            names = _pickle_globals(data)
        except Exception as exc:
            raise UnsafeCheckpoint(f"not a readable pickle: {type(exc).__name__}: {exc}") from None
        for g in names:
            ok = (g in _SAFE_EXACT or g.startswith(_SAFE_PREFIXES)) and not g.startswith(_UNSAFE_IN_TORCH)
            if not ok:
                raise UnsafeCheckpoint(f"the pickle references {g!r}; only tensors and plain containers are accepted "
                                       "(save a state_dict, or use safetensors)")


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


# ---------------------------------------------------------------- swapped-module architecture records

#: the safetensors metadata key of an architecture record (JSON): modules of the base model
#: swapped for others (silent units, SPEC §8.3), which a freshly built base model must get
#: before the checkpoint's weights load
ARCH_RECORD_KEY = "fvaudit_architecture"
ARCH_FORMAT = "fvaudit-architecture/1"
#: record kind (a module class's ``ARCH_KIND``) -> "module:function(module, entries) -> swapped names"
ARCH_REBUILDERS = {"silent_units": "fvaudit.engine.models.silent:rebuild_silent"}


def architecture_record(module: nn.Module) -> dict | None:
    """The modules of ``module`` that are not the base architecture's: every module whose class
    declares an ``ARCH_KIND``, as ``{kind: {module name: module.arch_entry()}}``; None for a
    plain model. :func:`save_checkpoint` writes it into the metadata, so any checkpoint of a
    manipulated model (an attack's, an upload's re-save) stays loadable."""
    kinds: dict[str, dict] = {}
    for name, m in module.named_modules():
        kind = getattr(type(m), "ARCH_KIND", None)
        if kind:
            kinds.setdefault(kind, {})[name] = m.arch_entry()
    return {"format": ARCH_FORMAT, "kinds": kinds} if kinds else None


def checkpoint_architecture(path: str | Path) -> dict | None:
    """The architecture record of a safetensors checkpoint (None: none, or not safetensors)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(ARCH_RECORD_KEY)
        return json.loads(raw) if raw else None
    except Exception as exc:
        raise ModelError(f"checkpoint {path.name}: unreadable architecture record: {exc}") from None


def rebuild_architecture(module: nn.Module, record: dict) -> list[str]:
    """Apply an :func:`architecture_record` to a freshly built base model, in place (each kind
    by its registered rebuilder, :data:`ARCH_REBUILDERS`); returns the swapped module names."""
    kinds = record.get("kinds") if isinstance(record, dict) and record.get("format") == ARCH_FORMAT else None
    if not isinstance(kinds, dict):
        raise ModelError(f"architecture record: expected format {ARCH_FORMAT} with kinds")
    done: list[str] = []
    for kind, entries in kinds.items():
        target = ARCH_REBUILDERS.get(kind)
        if target is None:
            raise ModelError(f"architecture record: unknown kind {kind!r} (known: {', '.join(ARCH_REBUILDERS)})")
        mod, _, fn = target.partition(":")
        try:
            done += getattr(importlib.import_module(mod), fn)(module, entries)
        except ValueError as exc:
            raise ModelError(f"architecture record: {exc}") from None
    return done


def apply_checkpoint(module: nn.Module, path: str | Path, display_name: str | None = None) -> list[str]:
    """Load a checkpoint into ``module``; returns the modules resized to fit a structurally
    pruned checkpoint (SPEC §5: :func:`~fvaudit.engine.models.surgery.rebuild_pruned`) or swapped
    by its architecture record (:func:`rebuild_architecture`), empty for an ordinary one."""
    state = load_state_dict_file(path, display_name)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    resized: list[str] = []
    if any(k in own and own[k].shape != v.shape for k, v in state.items()):
        try:
            resized = rebuild_pruned(module, {k: tuple(v.shape) for k, v in state.items() if k in own})
        except PruneError as exc:
            raise ModelError(f"checkpoint {display_name or path} does not fit the architecture: {exc}") from None
    arch = checkpoint_architecture(path)
    if arch is not None:         # swapped modules (silent units): rebuilt before the weights load
        resized += rebuild_architecture(module, arch)
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"checkpoint {display_name or path} does not fit the architecture: missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return resized


def save_checkpoint(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save weights as safetensors (no pickle), atomically; a model with swapped modules gets its
    :func:`architecture_record` in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    arch = architecture_record(module)
    if arch is not None:
        metadata = {**(metadata or {}), ARCH_RECORD_KEY: json.dumps(arch, sort_keys=True)}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata or {})
    os.replace(tmp, path)
    return path
