"""Unit activation scores, layer capture and the streaming top-k scan (SPEC §1).

``unit_scores`` turns a layer output into one score per (image, unit):
conv ``[B,C,H,W]`` → spatial squared L2 norm; tokens ``[B,T,D]`` → squared L2 over
tokens; fully connected ``[B,D]`` → the value. :func:`scan` makes one pass over an image
set and yields, for every unit of one or more layers, the top-k image ids (ties broken by
the smaller id) and the full score matrix ``[N, J]`` (float32 ``.npy``, memory-mapped).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from fvaudit.engine.data.images import ImageSet, ImageSetError
from fvaudit.engine.models.loaded import LoadedModel, ModelError
from fvaudit.engine.progress import NullReporter, Reporter, check_cancel


def unit_scores(output: torch.Tensor) -> torch.Tensor:
    """Activation score ``a_j(x)`` of every unit for a batch: ``[B, J]`` (SPEC §1).

    Always float32 (a bf16 output under autocast is upcast first): float16/bf16 scores
    would create ties that change top-k and Kendall-τ (ARCHITECTURE.md)."""
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
    if output.dim() == 4:
        return output.pow(2).sum(dim=(2, 3))
    if output.dim() == 3:
        return output.pow(2).sum(dim=1)
    if output.dim() == 2:
        return output
    raise ValueError(f"unit_scores: expected a 2-D, 3-D or 4-D layer output, got shape {tuple(output.shape)}")


class _StopForward(Exception):
    """Raised by a hook once every requested layer has its output: the rest is not needed."""


@contextlib.contextmanager
def capture(module: nn.Module, layers: Sequence[str], stop_early: bool = False,
            clone_final: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each named module's output; always removed on exit.

    Outputs are cloned at hook time. torchvision's ReLUs are in place: without the clone,
    an output taken at a conv module would be overwritten by the ReLU that follows it
    (SPEC §1 trap). The clone keeps the autograd graph, so attacks use it too.
    With ``stop_early`` the forward pass is aborted once all layers are captured; run the
    forward through :func:`run_captured`, which swallows that signal. ``clone_final=False``
    skips the copy of the output that completes the set when stopping early (nothing runs
    after it, so no in-place op can touch it: synthesis uses this on its hot path).
    """
    modules = dict(module.named_modules())
    missing = [name for name in layers if name not in modules or not name]
    if missing:
        raise ModelError(f"unknown layer {missing[0]!r}")
    store: dict[str, torch.Tensor] = {}
    wanted = set(layers)
    handles = []

    for name in dict.fromkeys(layers):
        def hook(_m, _inp, out, name=name):
            if not isinstance(out, torch.Tensor):
                raise ModelError(f"layer {name} does not output a single tensor")
            store[name] = out
            if stop_early and wanted.issubset(store):
                if clone_final:
                    store[name] = out.clone()
                raise _StopForward
            store[name] = out.clone()

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def run_captured(module: nn.Module, x: torch.Tensor, layers: Sequence[str], need_logits: bool = False
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Forward ``x``; return (layer outputs, logits or None when the pass stopped early)."""
    with capture(module, layers, stop_early=not need_logits) as store:
        logits = None
        try:
            logits = module(x)
        except _StopForward:
            pass
    return dict(store), logits


def layer_scores(module: nn.Module, x: torch.Tensor, layers: Sequence[str], need_logits: bool = False
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """``unit_scores`` of each layer for the batch ``x`` (and the logits if asked)."""
    outs, logits = run_captured(module, x, layers, need_logits)
    return {name: unit_scores(o) for name, o in outs.items()}, logits


# ---------------------------------------------------------------- top-k

class TopK:
    """Streaming per-unit top-k with the SPEC tie-break (equal scores → smaller id first).

    Batches must arrive in increasing id order. Candidates are kept sorted by
    (score desc, id asc); each batch is appended after them and a *stable* descending
    sort keeps equal scores in id order.
    """

    def __init__(self, units: int, k: int) -> None:
        self.k = k
        self.scores = torch.full((units, 0), float("-inf"))
        self.ids = torch.zeros((units, 0), dtype=torch.long)
        self.last_id = -1

    def update(self, ids: np.ndarray, scores: torch.Tensor) -> None:
        """``ids`` [b] increasing, ``scores`` [b, J]; NaN scores never enter the top-k."""
        if len(ids) == 0:
            return
        if ids[0] <= self.last_id or np.any(np.diff(ids) <= 0):
            raise ValueError("TopK.update: ids must arrive in strictly increasing order")
        self.last_id = int(ids[-1])
        s = scores.detach().float().cpu().T.contiguous()  # [J, b]
        s = torch.nan_to_num(s, nan=float("-inf"))
        cat_s = torch.cat([self.scores, s], dim=1)
        cat_i = torch.cat([self.ids, torch.as_tensor(ids, dtype=torch.long).expand(s.shape[0], -1)], dim=1)
        order = torch.sort(cat_s, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.scores = torch.gather(cat_s, 1, order)
        self.ids = torch.gather(cat_i, 1, order)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ids.numpy().copy(), self.scores.numpy().copy()


def topk_from_scores(scores: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every column of a score matrix ``[N, J]`` (ties → smaller id; NaN rows excluded)."""
    check_k(k, scores.shape[0])
    tk = TopK(scores.shape[1], k)
    ids = np.arange(scores.shape[0]) if ids is None else np.asarray(ids)
    for start in range(0, scores.shape[0], 8192):
        tk.update(ids[start : start + 8192], torch.from_numpy(np.array(scores[start : start + 8192], dtype=np.float32)))
    return tk.result()


def check_k(k: int, n_images: int) -> None:
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if n_images <= 0:
        raise ImageSetError("the image set is empty: no image to rank")
    if k > n_images:
        raise ValueError(f"k = {k} is larger than the image set ({n_images} images)")


# ---------------------------------------------------------------- scan

@dataclass
class LayerScan:
    layer: str
    scores: np.ndarray          # [N, J] float32 (memmap when written to disk); NaN rows = skipped images
    topk_ids: np.ndarray        # [J, k] int64
    topk_scores: np.ndarray     # [J, k] float32
    dead_units: list[int]       # units scoring 0 on every image (SPEC §1)
    path: Path | None = None

    @property
    def units(self) -> int:
        return int(self.scores.shape[1])


@dataclass
class ScanResult:
    image_set: str
    n_images: int
    k: int
    layers: dict[str, LayerScan]
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (id, reason): failed to decode
    seconds: float = 0.0
    skipped_at_index: list = field(default_factory=list)            # SkippedImage: not an image at all

    @property
    def n_skipped(self) -> int:
        return len(self.skipped) + len(self.skipped_at_index)

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


def scan(
    model: LoadedModel,
    image_set: ImageSet,
    layers: Sequence[str],
    k: int = 10,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    ids: Sequence[int] | None = None,
    workers: int | None = None,
    amp: bool | None = None,
    cache: str | None = None,
    max_skipped_share: float | None = None,
) -> ScanResult:
    """One streaming pass: every unit's top-k and the full score matrix for each layer.

    Input comes from :class:`~fvaudit.engine.data.pipeline.Loader` (``workers`` DataLoader
    processes, default the configured number, 0 = in-process; ``cache``: decode-cache use,
    auto | on | off). ``amp``: bf16 autocast + channels_last (default: on CUDA only);
    scores stay float32. Images that fail to decode are skipped and counted (their rows
    are NaN and never enter a top-k); when more than ``max_skipped_share`` of them fail
    (default: the configured 1 %), the scan raises
    :class:`~fvaudit.engine.data.pipeline.SkippedShareError` naming the count instead of
    describing part of the set. With ``out_dir`` the score matrices are written as
    ``scores_<layer>.npy`` (float32, memory-mapped), else held in memory.
    """
    from fvaudit.engine.data.pipeline import (Loader, amp_enabled, autocast, check_skipped_share, decode_size_for,
                                         prepare_module, to_device)

    reporter = reporter or NullReporter()
    if not layers:
        raise ModelError("scan needs at least one layer")
    infos = [model.layer(name) for name in layers]
    names = [i.name for i in infos]
    all_ids = image_set.ids if ids is None else image_set.check_ids(ids)
    check_k(k, len(all_ids))
    n = len(all_ids)
    row_of = None if ids is None else {int(i): r for r, i in enumerate(all_ids)}
    mats: dict[str, np.ndarray] = {}
    paths: dict[str, Path | None] = {}
    for info in infos:
        if out_dir is not None:
            p = Path(out_dir) / f"scores_{info.name.replace('/', '_')}.npy"
            p.parent.mkdir(parents=True, exist_ok=True)
            mats[info.name] = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, info.units))
            paths[info.name] = p
        else:
            mats[info.name] = np.empty((n, info.units), dtype=np.float32)
            paths[info.name] = None
    topks = {info.name: TopK(info.units, k) for info in infos}
    skipped: list[tuple[int, str]] = []
    use_amp = amp_enabled(device, amp)
    module = prepare_module(model.module, device, use_amp).eval()
    reporter.stage(f"scan {image_set.key}", total=n)
    t0 = time.perf_counter()
    done = 0
    order = np.sort(all_ids)
    loader = Loader(image_set, model.preprocess_many, decode_size_for(model), workers=workers, cache=cache,
                    pin_memory=torch.device(device).type == "cuda", on_warn=reporter.log, expected_images=n)
    groups = (order[i : i + batch_size] for i in range(0, n, batch_size))
    with torch.inference_mode():
        for batch in loader.batches(groups, on_skip=lambda i, why: skipped.append((i, why))):
            check_cancel(reporter)
            for i in batch.failed:
                r = i if row_of is None else row_of[i]
                for name in names:
                    mats[name][r] = np.nan
            if len(batch.ids):
                with autocast(device, use_amp):
                    scores, _ = layer_scores(module, to_device(batch.tensor, device, use_amp), names)
                rows = batch.ids if row_of is None else np.array([row_of[int(i)] for i in batch.ids])
                for name in names:
                    s = scores[name].float().cpu()
                    mats[name][rows] = s.numpy()
                    topks[name].update(batch.ids, s)
            done += len(batch.ids) + len(batch.failed)
            reporter.advance(done, n)
    if use_amp:
        model.module.to(memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - t0
    if skipped:
        reporter.log(f"skipped {len(skipped)} unreadable images", skipped=len(skipped))
    check_skipped_share(len(skipped), n, image_set.key, max_skipped_share)
    result_layers = {}
    for name in names:
        tk_ids, tk_scores = topks[name].result()
        mat = mats[name]
        if isinstance(mat, np.memmap):
            mat.flush()
        dead = np.flatnonzero(np.nan_to_num(np.abs(mat), nan=0.0).max(axis=0) == 0).tolist()
        result_layers[name] = LayerScan(name, mat, tk_ids, tk_scores, dead, paths[name])
    return ScanResult(image_set.key, n, k, result_layers, skipped, seconds, list(image_set.skipped))
