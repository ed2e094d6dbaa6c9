"""Scan throughput on a folder of ImageNet-like JPEGs, against named baselines (issue 15).

On a generated folder of 500×375 photo JPEGs (bench/_jpegs.py, made once outside git), for
the demo CNN (28×28, decode-bound) and EfficientNet-Lite0 at 224 (forward-bound on a CPU):

* baseline "PIL decode ceiling": `Image.open(p).convert("RGB")` of the same images in a
  pool of as many processes as the scan's DataLoader workers (what decoding alone allows);
* baseline "forward-only": the model's forward over the same images already decoded and
  preprocessed into one tensor, same batch size (what the model alone allows);
* "first pass": `engine.activations.scan` with an empty decode cache (decode with DCT
  scaling towards the input size, preprocess in the workers, forward, scores, top-k,
  score matrix; the cache is filled);
* "second pass": the same scan again, model-input-size pixels read back from the cache.

The four are interleaved in each of ``--repeats`` rounds (load on a shared machine hits
all of them alike); the table gives min and median over the rounds of images/s and of
the ratios first/ceiling (goal ≥ 0.8 where decode-bound), first/forward and second/first.
Writes bench/results/scan.json.

Usage: python bench/scan.py [--folder /tmp/fv-bench-jpegs] [--n 5000] [--n-lite 500] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "bench"))

import fvaudit  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from _jpegs import ensure_folder  # noqa: E402


def _decode_full(path: str) -> int:
    with Image.open(path) as im:
        return im.convert("RGB").size[0]


def decode_ceiling(paths: list[str], processes: int) -> float:
    t = time.perf_counter()
    if processes <= 1:
        for p in paths:
            _decode_full(p)
    else:
        with get_context("fork").Pool(processes) as pool:
            pool.map(_decode_full, paths, chunksize=16)
    return len(paths) / (time.perf_counter() - t)


def forward_only(model, x: torch.Tensor, batch: int) -> float:
    module = model.module.eval()
    with torch.inference_mode():
        module(x[:batch])  # warm-up
        t = time.perf_counter()
        for s in range(0, len(x), batch):
            module(x[s : s + batch])
        return len(x) / (time.perf_counter() - t)


def stats(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "all": xs}


def bench_model(name: str, layer: str, folder: Path, n: int, batch: int, workers: int, repeats: int,
                cache_root: Path) -> dict:
    from fvaudit.engine.scans.activations import scan
    from fvaudit.engine.data.images import DecodeCache, FolderImageSet, decode_image, stratified_ids
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.data.pipeline import decode_size_for

    model = load_model(name)
    plain = FolderImageSet(folder, verify=False)
    ids = stratified_ids(plain.labels, n)
    paths = [str(plain.paths[i]) for i in ids]
    size = decode_size_for(model)
    x = model.preprocess_many([decode_image(plain.paths[i], size) for i in ids])
    rounds: dict[str, list[float]] = {"decode_ceiling": [], "first": [], "second": [], "forward": []}
    for r in range(repeats):
        shutil.rmtree(cache_root, ignore_errors=True)
        cache = DecodeCache(cache_root, max_bytes=64 * 2**30)
        ds = FolderImageSet(folder, cache=cache, verify=False)
        rounds["decode_ceiling"].append(decode_ceiling(paths, workers))
        first = scan(model, ds, [layer], k=10, batch_size=batch, ids=ids, workers=workers, cache="on")
        rounds["first"].append(first.images_per_s)
        second = scan(model, ds, [layer], k=10, batch_size=batch, ids=ids, workers=workers, cache="on")
        rounds["second"].append(second.images_per_s)
        assert cache.hits == n and np.array_equal(np.asarray(first.layers[layer].scores),
                                                  np.asarray(second.layers[layer].scores))
        rounds["forward"].append(forward_only(model, x, batch))
        print(f"  {name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rounds.items()), flush=True)
    ratios = {
        "first_over_decode_ceiling": [f / c for f, c in zip(rounds["first"], rounds["decode_ceiling"])],
        "first_over_forward": [f / w for f, w in zip(rounds["first"], rounds["forward"])],
        "second_over_first": [s / f for s, f in zip(rounds["second"], rounds["first"])],
    }
    return {"model": name, "layer": layer, "images": n, "batch": batch, "workers": workers, "decode_size": size,
            "cache_bytes": cache.total_bytes, "img_s": {k: stats(v) for k, v in rounds.items()},
            "ratios": {k: stats(v) for k, v in ratios.items()}}


def main() -> None:
    from fvaudit.engine.data.pipeline import default_workers

    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", type=Path, default=Path("/tmp/fv-bench-jpegs"))
    ap.add_argument("--photos", type=Path, default=None, help="folder of scikit-image's sample photos")
    ap.add_argument("--folder-n", type=int, default=5000, help="JPEGs in the generated folder")
    ap.add_argument("--n", type=int, default=5000, help="images the demo CNN scans")
    ap.add_argument("--n-lite", type=int, default=500, help="images EfficientNet-Lite0 scans (forward-bound on a CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--cache", type=Path, default=Path("/tmp/fv-bench-cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scan.json")
    args = ap.parse_args()
    t = time.perf_counter()
    ensure_folder(args.folder, args.folder_n, args.photos)
    print(f"folder {args.folder}: {args.folder_n} JPEGs 500x375 ready ({time.perf_counter() - t:.0f} s)", flush=True)
    runs = [bench_model("fmnist-cnn", "relu3", args.folder, min(args.n, args.folder_n), 256, args.workers, args.repeats,
                        args.cache / "demo"),
            bench_model("efficientnet-lite0", "_blocks.15", args.folder, min(args.n_lite, args.folder_n), 32, args.workers,
                        args.repeats, args.cache / "lite")]
    load = os.getloadavg()
    out = {"torch_threads": torch.get_num_threads(), "cores": os.cpu_count(), "loadavg": load, "runs": runs}
    print(f"\nimages/s, min / median of {args.repeats} interleaved rounds; {args.workers} worker processes; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'model':20} {'images':>6} {'decode ceil':>13} {'forward-only':>13} {'first pass':>13} {'second pass':>13} "
          f"{'first/ceil':>11} {'first/fwd':>11} {'second/first':>12}")
    for r in runs:
        i, q = r["img_s"], r["ratios"]
        cell = lambda d, f="{:.0f}": f"{f.format(d['min'])}/{f.format(d['median'])}"
        print(f"{r['model']:20} {r['images']:6d} {cell(i['decode_ceiling']):>13} {cell(i['forward']):>13} "
              f"{cell(i['first']):>13} {cell(i['second']):>13} {cell(q['first_over_decode_ceiling'], '{:.2f}'):>11} "
              f"{cell(q['first_over_forward'], '{:.2f}'):>11} {cell(q['second_over_first'], '{:.2f}'):>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
