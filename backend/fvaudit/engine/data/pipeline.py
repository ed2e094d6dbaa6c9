"""Input pipeline: DataLoader worker processes decode and preprocess, the caller runs the model.

Scans (SPEC §1), attack batches and evaluations (SPEC §2) ask for batches of image ids;
:class:`Loader` splits each batch into chunks, has ``torch.utils.data.DataLoader``
worker processes decode them (towards the model's input size, :func:`decode_image`),
read or fill the decode cache and run the model's own ``preprocess_many``, then joins
the chunks back into the batch, in order, pinned for a ``non_blocking`` copy on CUDA.
The batches a caller gets are the same, bit for bit, whatever the number of workers
(0 = in-process, what tests use): chunking changes where preprocessing runs, not what
it computes, and the forward pass still sees the caller's batch.

Mixed precision (:func:`amp_enabled`): bf16 autocast and channels_last on CUDA, off on
the CPU, selectable; scores are computed from float32 (``unit_scores`` upcasts), so
score matrices and top-k stay float32.

Process-wide defaults (:func:`configure`) let the worker apply its settings once
(workers, decode-cache use, the skipped-share threshold, AMP) for every job kind.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fvaudit.engine.data.images import ImageSet, ImageSetError

log = logging.getLogger("fvaudit.engine.data.pipeline")

CACHE_MODES = ("auto", "on", "off")


@dataclass
class Batch:
    """One decoded, preprocessed batch: what every consumer of the pipeline iterates over."""

    ids: np.ndarray          # ids of the images that decoded
    tensor: "object"         # torch.Tensor [b, C, H, W]
    failed: list[int] = field(default_factory=list)  # ids that failed to decode


def default_workers() -> int:
    """This machine's cores (the ones this process may run on)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PipelineOptions:
    workers: int | None = None        # DataLoader worker processes; None = the machine's cores, 0 = in-process
    cache: str = "auto"               # decode cache: auto (when a full pass fits its bound) | on | off
    max_skipped_share: float = 0.01   # a scan fails when more of its images than this fail to decode
    amp: bool | None = None           # bf16 autocast + channels_last; None = on CUDA only
    chunk: int = 32                   # most images one worker task decodes
    prefetch: int = 2                 # tasks in flight per worker

    def validated(self) -> "PipelineOptions":
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be an integer >= 0 or None, got {self.workers!r}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        if not 0.0 <= self.max_skipped_share <= 1.0:
            raise ValueError(f"max_skipped_share must lie in [0, 1], got {self.max_skipped_share!r}")
        if self.chunk < 1 or self.prefetch < 1:
            raise ValueError("chunk and prefetch must be >= 1")
        return self


_OPTIONS = PipelineOptions()


def configure(**kw) -> PipelineOptions:
    """Set process-wide defaults (unknown names raise); returns the new options."""
    global _OPTIONS
    names = {f.name for f in fields(PipelineOptions)}
    unknown = set(kw) - names
    if unknown:
        raise TypeError(f"unknown pipeline option(s): {', '.join(sorted(unknown))}")
    _OPTIONS = replace(_OPTIONS, **kw).validated()
    return _OPTIONS


def options() -> PipelineOptions:
    return _OPTIONS


def resolve_workers(workers: int | None = None) -> int:
    w = workers if workers is not None else _OPTIONS.workers
    return default_workers() if w is None else int(w)


# ---------------------------------------------------------------- device, AMP, memory format

def amp_enabled(device: str | torch.device, amp: bool | None = None) -> bool:
    """bf16 autocast + channels_last for this device: on CUDA unless turned off; off on the
    CPU unless asked for explicitly (``amp=True``: tests exercise that path on the CPU)."""
    flag = amp if amp is not None else _OPTIONS.amp
    if flag is None:
        return torch.device(device).type == "cuda"
    return bool(flag)


def autocast(device: str | torch.device, enabled: bool):
    """``torch.autocast`` in bf16 on the device's type, or nothing."""
    dev = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def prepare_module(module: torch.nn.Module, device: str | torch.device, amp: bool) -> torch.nn.Module:
    """Move a module to the device; channels_last when AMP is on (tensor cores want NHWC)."""
    module = module.to(device)
    if amp:
        module = module.to(memory_format=torch.channels_last)
    return module


def to_device(x: torch.Tensor, device: str | torch.device, amp: bool) -> torch.Tensor:
    """Copy a (pinned) batch to the device without blocking; NHWC when AMP is on."""
    dev = torch.device(device)
    x = x.to(dev, non_blocking=dev.type == "cuda")
    if amp and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def decode_size_for(model) -> int:
    """The decode size ``S`` of a model (see :func:`fvaudit.engine.data.images.decode_image`): its own
    ``decode_size`` when it declares one, else ``round(max(H, W) · 256 / 224)``, the resize
    before the centre crop of the ImageNet recipe (256 for a 224 crop, 32 for 28×28)."""
    own = getattr(model, "decode_size", None)
    if own:
        return int(own)
    h, w = model.input_shape[-2:]
    return int(round(max(h, w) * 256 / 224))


# ---------------------------------------------------------------- the loader

@dataclass
class _Task:
    group: int       # which caller batch
    part: int        # which chunk of it
    parts: int
    ids: np.ndarray


@dataclass
class _Chunk:
    group: int
    part: int
    parts: int
    ids: np.ndarray                   # ids that decoded
    tensor: torch.Tensor | None
    failed: list                      # (id, reason)
    events: list                      # decode-cache events (DecodeCache.apply)


class _ChunkSet(Dataset):
    """``dataset[task]`` = one decoded + preprocessed chunk (runs in a worker process)."""

    def __init__(self, image_set: ImageSet, preprocess_many, size: int | None, use_cache: bool):
        self.image_set, self.preprocess_many, self.size, self.use_cache = image_set, preprocess_many, size, use_cache

    def __getitem__(self, task: _Task) -> _Chunk:
        good, arrays, failed = [], [], []
        kw = {} if self.use_cache else {"use_cache": False}
        for i in task.ids:
            try:
                arrays.append(self.image_set.load_input(int(i), self.size, **kw))
                good.append(int(i))
            except (OSError, ValueError, SyntaxError) as exc:
                failed.append((int(i), f"{type(exc).__name__}: {exc}"))
        tensor = self.preprocess_many(arrays) if arrays else None
        cache = getattr(self.image_set, "cache", None)
        events = cache.drain() if cache is not None else []
        return _Chunk(task.group, task.part, task.parts, np.asarray(good, dtype=np.int64), tensor, failed, events)


def _first(batch):
    return batch


class Loader:
    """Batches of model input for groups of ids of one image set.

    ``groups`` (an iterable, possibly lazy: attack steps are drawn as they are needed)
    yields id arrays; :meth:`batches` yields one :class:`~fvaudit.engine.data.images.Batch`
    per group, in order, with the ids that decoded and the ones that failed (their
    reason to ``on_skip``). In-memory sets (``arrays``) are preprocessed in-process:
    there is nothing to decode.
    """

    def __init__(self, image_set: ImageSet, preprocess_many: Callable, decode_size: int | None = None,
                 workers: int | None = None, cache: str | None = None, pin_memory: bool = False,
                 on_warn: Callable[[str], None] | None = None, expected_images: int | None = None):
        self.image_set = image_set
        self.preprocess_many = preprocess_many
        self.decode_size = decode_size
        self.workers = resolve_workers(workers)
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.on_warn = on_warn
        mode = cache if cache is not None else _OPTIONS.cache
        if mode not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        self.cache = getattr(image_set, "cache", None) if decode_size is not None else None
        self.use_cache = self.cache is not None and (
            mode == "on" or (mode == "auto" and self._fits(expected_images or len(image_set))))

    def _fits(self, n: int) -> bool:
        """"Auto" uses the cache only where it pays: when one full pass fits its bound, so that
        the next pass reads it back (an LRU cache smaller than a sequential pass never hits).
        Footprint estimate: a 4:3 image at decode size S, RGB."""
        s = self.decode_size or 0
        return n * (s * round(s * 4 / 3) * 3 + 128) <= self.cache.max_bytes  # type: ignore[union-attr]

    # ---------------------------------------------------------------- iteration
    def batches(self, groups: Iterable[Sequence[int]], on_skip: Callable[[int, str], None] | None = None
                ) -> Iterator[Batch]:
        if hasattr(self.image_set, "arrays"):
            for g in groups:
                ids = np.asarray(g, dtype=np.int64)
                yield Batch(ids, self.preprocess_many(list(self.image_set.arrays(ids))))  # type: ignore[attr-defined]
            return
        yield from self._loaded(groups, on_skip)

    def _tasks(self, groups: Iterable[Sequence[int]]) -> Iterator[_Task]:
        for g, ids in enumerate(groups):
            ids = np.asarray(ids, dtype=np.int64)
            if self.workers <= 1 or len(ids) <= 1:
                size = max(1, len(ids))
            else:   # enough chunks to keep every worker busy, none larger than `chunk`
                size = max(1, min(_OPTIONS.chunk, math.ceil(len(ids) / self.workers)))
            parts = max(1, math.ceil(len(ids) / size))
            for p in range(parts):
                yield _Task(g, p, parts, ids[p * size:(p + 1) * size])

    def _dataloader(self, groups, workers: int) -> DataLoader:
        kw = {}
        if workers > 0:
            kw = dict(prefetch_factor=_OPTIONS.prefetch, multiprocessing_context="fork")
        return DataLoader(_ChunkSet(self.image_set, self.preprocess_many, self.decode_size, self.use_cache),
                          batch_size=None, sampler=self._tasks(groups), num_workers=workers,
                          collate_fn=_first, pin_memory=False, **kw)

    def _iterate(self, groups) -> Iterator[_Chunk]:
        workers = self.workers
        if workers > 0:
            try:
                it = iter(self._dataloader(groups, workers))
            except AssertionError as exc:   # a daemonic process (a pool child) may not have children
                self._warn(f"input pipeline runs in-process: cannot start worker processes here ({exc})")
                workers = 0
            else:
                yield from it
                return
        yield from iter(self._dataloader(groups, 0))

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        if self.on_warn is not None:
            self.on_warn(msg)

    def _loaded(self, groups, on_skip) -> Iterator[Batch]:
        parts: list[_Chunk] = []
        for ch in self._iterate(groups):
            if self.cache is not None and ch.events:
                for err in self.cache.apply(ch.events):
                    self._warn(f"decode cache {self.cache.root}: write failed ({err}); "
                               "the images are used, the cache is skipped")
            parts.append(ch)
            if ch.part + 1 < ch.parts:
                continue
            failed = [f for c in parts for f in c.failed]
            for i, why in failed:
                if on_skip is not None:
                    on_skip(i, why)
            ids = np.concatenate([c.ids for c in parts]) if parts else np.zeros(0, np.int64)
            tensors = [c.tensor for c in parts if c.tensor is not None]
            tensor = None
            if len(tensors) == 1 and not self.pin_memory:
                tensor = tensors[0]
            elif tensors:
                shape = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:])
                tensor = torch.empty(shape, dtype=tensors[0].dtype, pin_memory=self.pin_memory)
                torch.cat(tensors, out=tensor)
            yield Batch(ids, tensor, [i for i, _ in failed])
            parts = []


def load_groups(loader: Loader, groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, torch.Tensor]:
    """All groups loaded and joined into one tensor (preloading a small set); raises when an
    image fails to decode (a preloaded attack or decoy set must be complete)."""
    ids, tensors, failed = [], [], []
    for b in loader.batches(groups, on_skip=lambda i, why: failed.append((i, why))):
        ids.append(b.ids)
        if b.tensor is not None:
            tensors.append(b.tensor)
    if failed:
        raise ImageSetError(f"{len(failed)} images of {loader.image_set.key} failed to decode "
                            f"(first: id {failed[0][0]}: {failed[0][1]})")
    return np.concatenate(ids), torch.cat(tensors)


class SkippedShareError(ImageSetError):
    """Too many images of a pass failed to decode: the result would describe part of the set."""


def check_skipped_share(n_skipped: int, n_images: int, key: str, max_share: float | None = None) -> None:
    """Fail when more than ``max_share`` (default: the configured threshold) of ``n_images``
    were skipped; the message names the count (it becomes the job's failure reason)."""
    share = _OPTIONS.max_skipped_share if max_share is None else max_share
    if n_images and n_skipped > share * n_images:
        raise SkippedShareError(
            f"{n_skipped} of {n_images} images of {key} failed to decode ({100 * n_skipped / n_images:.2f}%), "
            f"more than the allowed {100 * share:g}%: the scan would describe part of the set only")


def iter_batches(
    image_set: ImageSet,
    ids: Sequence[int],
    batch_size: int,
    preprocess_many: Callable[[list[np.ndarray]], "object"],
    workers: int | None = None,
    on_skip: Callable[[int, str], None] | None = None,
    decode_size: int | None = None,
) -> Iterator[Batch]:
    """Decode + preprocess consecutive batches of ``ids`` through the input pipeline
    (:class:`Loader`: DataLoader worker processes, 0 = in-process).

    A file that fails to decode is skipped: ``on_skip(id, reason)`` is called and the
    batch carries the ids that did decode. ``decode_size``: see :func:`decode_image`
    (None = full resolution).
    """
    ids = np.asarray(ids, dtype=np.int64)
    loader = Loader(image_set, preprocess_many, decode_size, workers=workers)
    yield from loader.batches((ids[i : i + batch_size] for i in range(0, len(ids), batch_size)), on_skip)


# ---------------------------------------------------------------- training batches, step by step

#: sets whose preprocessed tensor fits this many MB are decoded once and held in memory
PRELOAD_LIMIT_MB = 512


class Batches:
    """Batches of one id list of an image set, addressed by position in that list.

    A set whose preprocessed tensor fits ``preload_limit_mb`` (default
    :data:`PRELOAD_LIMIT_MB`) is loaded once (through the
    input pipeline's workers) and indexed afterwards; a larger one is decoded per batch
    by the pipeline (:meth:`stream`), with the decode cache where it fits.
    """

    def __init__(self, image_set: ImageSet, ids: np.ndarray, model, preload_limit_mb: int | None = None,
                 workers: int | None = None, pin_memory: bool = False):
        self.image_set = image_set
        self.ids = np.asarray(ids, dtype=np.int64)
        self.loader = Loader(image_set, model.preprocess_many, decode_size_for(model), workers=workers,
                             pin_memory=pin_memory, expected_images=len(self.ids))
        self.cache: torch.Tensor | None = None
        per_image = int(np.prod(model.input_shape)) * 4
        limit = PRELOAD_LIMIT_MB if preload_limit_mb is None else preload_limit_mb
        if len(self.ids) and len(self.ids) * per_image <= limit * 2**20:
            _, self.cache = load_groups(self.loader, [self.ids[i : i + 512] for i in range(0, len(self.ids), 512)])

    @property
    def preloaded(self) -> bool:
        return self.cache is not None

    def _kept(self, positions: np.ndarray, failed: list[int]) -> np.ndarray:
        if not failed:
            return positions
        bad = set(failed)
        return np.asarray([p for p in positions if int(self.ids[p]) not in bad], dtype=np.int64)

    def stream(self, position_groups) -> Iterator[tuple[np.ndarray, torch.Tensor | None]]:
        """(positions that loaded, tensor) for each group of positions, in order."""
        if self.cache is not None:
            for pos in position_groups:
                yield pos, self.cache[torch.as_tensor(pos)]
            return
        groups = list(position_groups) if not hasattr(position_groups, "__next__") else position_groups
        pending: list[np.ndarray] = []

        def ids_of():
            for pos in groups:
                pending.append(np.asarray(pos, dtype=np.int64))
                yield self.ids[pending[-1]]

        for b in self.loader.batches(ids_of()):
            yield self._kept(pending.pop(0), b.failed), b.tensor

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Rows at ``positions`` of ``self.ids`` (positions, not ids), loaded now."""
        pos, x = next(self.stream([np.asarray(positions, dtype=np.int64)]))
        if x is None:
            raise ImageSetError(f"none of {len(positions)} images of {self.image_set.key} could be decoded")
        return pos, x

    def close(self) -> None:
        self.cache = None


class StepFeed:
    """The training batch and the attack/decoy batch of every step from ``start`` on, drawn by
    ``draw(step)`` (seeded by (seed, step) only) and decoded ahead by the input pipeline.

    A resumed run starts the feed at its checkpoint's step and gets exactly the batches an
    uninterrupted run gets there. One loader serves both sources (both are training-set ids)
    in step order; a preloaded source is indexed in memory instead.
    """

    def __init__(self, draw, train_b: Batches, extra_b: Batches | None, start: int, total: int):
        self.draw, self.train_b, self.extra_b, self.start, self.total = draw, train_b, extra_b, start, total

    def __iter__(self) -> Iterator[tuple[int, tuple[np.ndarray, torch.Tensor], tuple | None]]:
        """(step, (train positions, tensor), (attack/decoy positions, tensor) or None) per step."""
        srcs = {"train": self.train_b, "extra": self.extra_b}
        lazy = [t for t, b in srcs.items() if b is not None and not b.preloaded]
        plan: deque = deque()

        def lazy_ids():   # runs as the loader asks for work, ahead of the training loop
            for step in range(self.start, self.total):
                tpos, epos = self.draw(step)
                plan.append((step, tpos, epos))
                for tag, pos in (("train", tpos), ("extra", epos)):
                    if pos is not None and tag in lazy:
                        yield srcs[tag].ids[pos]  # type: ignore[union-attr]

        batches = srcs[lazy[0]].loader.batches(lazy_ids()) if lazy else None  # type: ignore[union-attr]
        for step in range(self.start, self.total):
            first = next(batches) if batches is not None else None   # fills `plan` up to this step at least
            if batches is not None:
                drawn, tpos, epos = plan.popleft()
                assert drawn == step
            else:
                tpos, epos = self.draw(step)
            out = {}
            for tag, pos in (("train", tpos), ("extra", epos)):
                if pos is None:
                    continue
                src = srcs[tag]
                if tag in lazy:
                    b = first if first is not None else next(batches)  # type: ignore[arg-type]
                    first = None
                    out[tag] = (src._kept(pos, b.failed), b.tensor)  # type: ignore[union-attr]
                else:
                    out[tag] = (pos, src.cache[torch.as_tensor(pos)])  # type: ignore[union-attr,index]
            if out["train"][1] is None:
                raise ImageSetError(f"step {step}: no image of the training batch could be decoded")
            yield step, out["train"], out.get("extra")
