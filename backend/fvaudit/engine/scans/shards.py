"""Sharded scans: split one scan into contiguous row ranges, merge the parts exactly (SPEC §1).

A scan of N images can run as S shards on S workers. Shard ``i`` scans the ids
``[start_i, stop_i)`` of the image set (:func:`shard_ranges`), producing rows
``start_i .. stop_i - 1`` of every score matrix and its own top-k. :func:`merge_scans`
puts the parts back together so that the result equals the one-worker scan bit for bit:

* score matrices: the parts' rows, concatenated in range order (a copy, no arithmetic);
* top-k (:func:`merge_topk`): the global top-k restricted to one shard is a prefix of
  that shard's own top-k (both sort by score descending, then smaller id: SPEC §1), so
  the union of the parts' top-k holds every winner; sorting that union by the same key
  and keeping ``k`` gives exactly the streaming result. NaN scores rank as ``-inf``, as
  :class:`~fvaudit.engine.scans.activations.TopK` ranks them; images that failed to decode
  never entered any part's top-k, so they enter no merged one either;
* dead units (SPEC §1: zero on every image): a unit is dead in the whole set exactly
  when it is dead in every non-empty part;
* skipped images: the parts' lists, concatenated in range order (the one-worker scan
  appends them in id order too).

Why the boundaries sit on multiples of the batch size: on CPU, oneDNN convolutions give
per-image results that depend on the batch they run in. Measured on the demo CNN
(``relu3``, 64 random inputs): scored in batches of 1 or 3 the scores differ from one
batch of 64 by up to 1.8e-4; in batches of 8 or 32 they are identical; EfficientNet-Lite0
gave identical scores in every composition tried. Aligned ranges make every shard's
batches the very batches of the one-worker scan, so no composition effect can appear.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fvaudit.engine.scans.activations import LayerScan, ScanResult, scan
from fvaudit.engine.data.images import ImageSet
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.data.pipeline import check_skipped_share
from fvaudit.engine.progress import Reporter


def shard_ranges(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ranges ``[start, stop)`` covering ``0..n``, cut on multiples of ``batch_size``.

    The ``ceil(n / batch_size)`` batches of the one-worker scan are dealt out as evenly
    as whole batches allow; a shard gets an empty range when there are fewer batches than
    shards. Always returns ``shards`` ranges, in order.
    """
    if n < 0 or shards < 1 or batch_size < 1:
        raise ValueError(f"shard_ranges: need n ≥ 0, shards ≥ 1, batch_size ≥ 1 (got {n}, {shards}, {batch_size})")
    n_batches = -(-n // batch_size)
    cuts = [min(n, (i * n_batches // shards) * batch_size) for i in range(shards + 1)]
    cuts[-1] = n
    return [(cuts[i], cuts[i + 1]) for i in range(shards)]


def scan_shard(model: LoadedModel, image_set: ImageSet, layers: Sequence[str], k: int, start: int, stop: int,
               batch_size: int = 256, device: str | torch.device = "cpu", out_dir: str | Path | None = None,
               reporter: Reporter | None = None, **scan_kwargs) -> ScanResult:
    """Scan the ids ``[start, stop)`` of ``image_set``: rows ``start..stop-1`` and their top-k.

    Ids stay those of the whole set (top-k ids, skipped ids); score-matrix row ``r`` is
    image ``start + r``. ``k`` is capped at the shard's size (the merge keeps the global k).
    No skipped-share check here: failures may cluster in one range while the whole set is
    within the threshold, so :func:`merge_scans` checks the share of the whole set.
    Further keyword arguments go to :func:`~fvaudit.engine.scans.activations.scan`.
    """
    if not 0 <= start < stop <= len(image_set):
        raise ValueError(f"scan_shard: range [{start}, {stop}) is empty or outside the set ({len(image_set)} images)")
    return scan(model, image_set, layers, k=min(k, stop - start), batch_size=batch_size, device=device,
                out_dir=out_dir, reporter=reporter, ids=np.arange(start, stop, dtype=np.int64),
                max_skipped_share=1.0, **scan_kwargs)


@dataclass
class ShardPart:
    """One shard's output: its row range, its per-layer scans (rows of the range only), its skipped images."""

    start: int
    stop: int
    layers: dict[str, LayerScan]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def from_scan(cls, start: int, stop: int, res: ScanResult) -> "ShardPart":
        return cls(start, stop, dict(res.layers), list(res.skipped), res.seconds)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the union of per-part top-k lists ``(ids [J, k_i], scores [J, k_i])``.

    Order: score descending, ties → smaller id (SPEC §1); NaN ranks as ``-inf`` (as in
    :class:`~fvaudit.engine.scans.activations.TopK`), ``-0.0`` equals ``0.0``. Returns at most
    ``k`` columns (fewer when the parts hold fewer candidates in total).
    """
    parts = [(np.asarray(i, dtype=np.int64), np.asarray(s, dtype=np.float32)) for i, s in parts]
    if not parts:
        raise ValueError("merge_topk: no parts")
    units = {p[0].shape[0] for p in parts} | {p[1].shape[0] for p in parts}
    if len(units) != 1 or any(i.shape != s.shape for i, s in parts):
        raise ValueError("merge_topk: parts disagree on the number of units or on their shapes")
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    if ids.shape[1] == 0:
        return ids, scores
    key = np.where(np.isnan(scores), np.float32(np.inf), -scores)      # NaN → -inf, then descending
    key = key + np.float32(0.0)                                          # -0.0 → +0.0: equal scores tie exactly
    order = np.lexsort((ids, key), axis=1)[:, :k]
    out_s = np.take_along_axis(scores, order, axis=1)
    return np.take_along_axis(ids, order, axis=1), np.where(np.isnan(out_s), np.float32(-np.inf), out_s)


def merge_scans(parts: Sequence[ShardPart], n_images: int, k: int, image_set_key: str,
                out_dir: str | Path | None = None, skipped_at_index: Sequence = (),
                max_skipped_share: float | None = None) -> ScanResult:
    """One :class:`ScanResult` from the shards of a scan, equal to the one-worker scan.

    Like the one-worker scan it fails (:class:`~fvaudit.engine.data.pipeline.SkippedShareError`)
    when more than ``max_skipped_share`` (default: the configured threshold) of the whole
    set failed to decode.

    ``parts`` must cover ``0..n_images`` with contiguous, non-overlapping ranges (empty
    ranges allowed) and scan the same layers. With ``out_dir`` each score matrix is
    written as ``scores_<layer>.npy`` (float32, memory-mapped) exactly as
    :func:`~fvaudit.engine.scans.activations.scan` writes it. ``seconds`` is the sum of the
    parts' scan times (work done, not wall-clock time: the parts may overlap).
    """
    parts = sorted(parts, key=lambda p: (p.start, p.stop))
    pos = 0
    for p in parts:
        if p.start != pos or p.stop < p.start:
            raise ValueError(f"merge_scans: shard ranges do not tile 0..{n_images} (a range starts at {p.start}, "
                             f"expected {pos})")
        pos = p.stop
    if pos != n_images:
        raise ValueError(f"merge_scans: shard ranges end at {pos}, not at {n_images}")
    full = [p for p in parts if p.stop > p.start]
    if not full:
        raise ValueError("merge_scans: every shard is empty")
    skipped = [s for p in parts for s in p.skipped]
    check_skipped_share(len(skipped), n_images, image_set_key, max_skipped_share)
    names = list(full[0].layers)
    for p in full:
        if list(p.layers) != names:
            raise ValueError(f"merge_scans: shard [{p.start}, {p.stop}) scanned layers {list(p.layers)}, not {names}")
        for name, ls in p.layers.items():
            if ls.scores.shape[0] != p.stop - p.start:
                raise ValueError(f"merge_scans: shard [{p.start}, {p.stop}) holds {ls.scores.shape[0]} rows of {name}")
    layers: dict[str, LayerScan] = {}
    for name in names:
        units = full[0].layers[name].units
        path = None
        if out_dir is not None:
            path = Path(out_dir) / f"scores_{name.replace('/', '_')}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            mat = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_images, units))
        else:
            mat = np.empty((n_images, units), dtype=np.float32)
        for p in full:
            src = p.layers[name].scores
            for r in range(0, p.stop - p.start, 65536):       # bounded memory for memory-mapped parts
                mat[p.start + r: min(p.stop, p.start + r + 65536)] = src[r: r + 65536]
        if isinstance(mat, np.memmap):
            mat.flush()
        tk_ids, tk_scores = merge_topk([(p.layers[name].topk_ids, p.layers[name].topk_scores) for p in full], k)
        dead = set(full[0].layers[name].dead_units)
        for p in full[1:]:
            dead &= set(p.layers[name].dead_units)
        layers[name] = LayerScan(name, mat, tk_ids, tk_scores, sorted(int(u) for u in dead), path)
    return ScanResult(image_set_key, n_images, k, layers, skipped, float(sum(p.seconds for p in parts)),
                      list(skipped_at_index))


def scan_in_shards(model: LoadedModel, image_set: ImageSet, layers: Sequence[str], k: int, shards: int,
                   batch_size: int = 256, device: str | torch.device = "cpu", out_dir: str | Path | None = None,
                   reporter: Reporter | None = None, max_skipped_share: float | None = None,
                   **scan_kwargs) -> ScanResult:
    """Scan in ``shards`` row ranges one after another, then merge: the result of
    :func:`~fvaudit.engine.scans.activations.scan` (``fvaudit scan --shards``; a check of the split
    and the merge on one machine). Parts go to ``out_dir/parts`` and are removed after the merge."""
    import shutil

    n = len(image_set)
    parts = []
    for i, (start, stop) in enumerate(shard_ranges(n, shards, batch_size)):
        if start == stop:
            parts.append(ShardPart(start, stop, {}))
            continue
        part_dir = Path(out_dir) / "parts" / f"shard-{i}" if out_dir is not None else None
        res = scan_shard(model, image_set, layers, k, start, stop, batch_size=batch_size, device=device,
                         out_dir=part_dir, reporter=reporter, **scan_kwargs)
        parts.append(ShardPart.from_scan(start, stop, res))
    merged = merge_scans(parts, n, min(k, n), image_set.key, out_dir=out_dir, skipped_at_index=image_set.skipped,
                         max_skipped_share=max_skipped_share)
    if out_dir is not None:
        del parts
        shutil.rmtree(Path(out_dir) / "parts", ignore_errors=True)
    return merged
