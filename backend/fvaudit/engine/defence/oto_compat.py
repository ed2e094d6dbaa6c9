"""Make PyPI ``only-train-once`` 3.0.1 (OTO) import with this torch and run on CPU (SPEC §5).

ENVIRONMENT.md: OTO 3.0.1 does not import with torch ≥ 2.9, because the two private names
it uses moved (``torch.onnx._globals`` and ``torch.onnx._optimize_graph`` now live under
``torch.onnx._internal.torchscript_exporter``), and its HESSO optimizer builds one mask
with an unconditional ``.cuda()``. :func:`load_oto` installs three shims, each only when
needed, and returns the ``only_train_once`` package:

1. ``torch.onnx._globals`` aliased to the module that holds ``GLOBALS`` now;
2. ``torch.onnx._optimize_graph`` aliased to the torchscript exporter's function;
3. ``HESSO.identify_redundant_groups`` recompiled from its own source with that
   ``.cuda()`` replaced by ``.to(<the group's parameter device>)``: the same method,
   device-aware. The source is checked to contain the call exactly once, so another OTO
   release fails loudly here instead of being patched blindly.

On a torch that still has the old names (< 2.9) shims 1–2 do nothing; shim 3 is a no-op
on CUDA machines (same device). OTO's DHSPG/LHSPG optimizers are not in the wheel.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
import types

CUDA_CALL = "torch.zeros(group['num_groups'], dtype=torch.bool).cuda()"
DEVICE_AWARE = "torch.zeros(group['num_groups'], dtype=torch.bool).to(group['params'][0].device)"


class OTOUnavailable(RuntimeError):
    """only-train-once is missing or could not be made to work with this torch (message says why)."""


def _alias_onnx_names() -> list[str]:
    import torch
    import torch.onnx

    done = []
    try:
        importlib.import_module("torch.onnx._globals")
    except ImportError:
        from torch.onnx._internal.torchscript_exporter import _globals

        sys.modules["torch.onnx._globals"] = _globals
        torch.onnx._globals = _globals  # type: ignore[attr-defined]
        done.append("torch.onnx._globals")
    if not hasattr(torch.onnx, "_optimize_graph"):
        from torch.onnx._internal.torchscript_exporter.utils import _optimize_graph

        torch.onnx._optimize_graph = _optimize_graph  # type: ignore[attr-defined]
        done.append("torch.onnx._optimize_graph")
    return done


def _device_aware_hesso(hesso_module: types.ModuleType) -> bool:
    cls = hesso_module.HESSO
    fn = cls.identify_redundant_groups
    if getattr(fn, "_fvaudit_device_aware", False):
        return False
    src = textwrap.dedent(inspect.getsource(fn))
    count = src.count(CUDA_CALL)
    if count == 0 and ".cuda()" not in src:
        return False                      # a release that fixed it: nothing to do
    if count != 1:
        raise OTOUnavailable(f"only-train-once: HESSO.identify_redundant_groups has {count} occurrences of "
                             f"{CUDA_CALL!r} (expected 1): an untested OTO release; pin only-train-once==3.0.1")
    namespace: dict = {}
    exec(compile(src.replace(CUDA_CALL, DEVICE_AWARE), inspect.getsourcefile(fn) or "<hesso>", "exec"),
         hesso_module.__dict__, namespace)
    patched = namespace["identify_redundant_groups"]
    patched._fvaudit_device_aware = True
    cls.identify_redundant_groups = patched
    return True


def load_oto() -> types.ModuleType:
    """Import ``only_train_once`` with the shims applied (idempotent); OTOUnavailable if it cannot."""
    try:
        _alias_onnx_names()
        oto = importlib.import_module("only_train_once")
        hesso = importlib.import_module("only_train_once.optimizer.hesso")
    except ImportError as exc:
        raise OTOUnavailable(f"only-train-once could not be imported (pip install only-train-once==3.0.1): {exc}") from exc
    _device_aware_hesso(hesso)
    return oto
