"""Scan throughput against the forward-only ceiling, and the decoded-image cache speed-up.

For each model (the Fashion-MNIST demo CNN and EfficientNet-Lite0) on a generated folder
of JPEG photos-sized images (class subfolders):

* baseline "forward-only": the model's plain forward over the same images, already
  decoded and preprocessed into one tensor (the ceiling a scan cannot beat);
* "scan, cold": `engine.activations.scan` over the folder with an empty decode cache
  (decode + preprocess + forward + scores + streaming top-k + score matrix);
* "scan, warm": the same scan again, decoded pixels read back from the cache.

Prints images/s, scan/forward ratio and the warm/cold speed-up; writes
bench/results/scan.json. Usage: python bench/scan.py [--n 512] [--n-lite 256]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))

import fvaudit  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def make_folder(root: Path, n: int, size=(500, 375), classes: int = 10, seed: int = 0) -> Path:
    """JPEGs at ImageNet-like size, made from upscaled Fashion-MNIST items plus noise."""
    from fvaudit.engine.images import fashion_mnist

    rng = np.random.default_rng(seed)
    fm = fashion_mnist("test")
    for i in range(n):
        c = i % classes
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        base = Image.fromarray(fm.images[i]).resize(size, Image.BILINEAR).convert("RGB")
        arr = np.asarray(base, dtype=np.int16) + rng.integers(-20, 20, size=(size[1], size[0], 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    return root


def forward_only(model, x: torch.Tensor, batch: int) -> float:
    module = model.module.eval()
    with torch.inference_mode():
        module(x[:batch])  # warm-up
        t = time.perf_counter()
        for s in range(0, len(x), batch):
            module(x[s : s + batch])
        return len(x) / (time.perf_counter() - t)


def bench_model(name: str, folder: Path, n: int, batch: int, layer: str, cache_root: Path) -> dict:
    from fvaudit.engine.activations import scan
    from fvaudit.engine.images import DecodeCache, FolderImageSet, decode_image
    from fvaudit.engine.models import load_model

    model = load_model(name)
    plain = FolderImageSet(folder)
    ids = plain.ids[:n]
    x = model.preprocess_many([decode_image(plain.paths[i]) for i in ids])
    fwd = forward_only(model, x, batch)
    cache = DecodeCache(cache_root / name)
    ds = FolderImageSet(folder, cache=cache)
    cold = scan(model, ds, [layer], k=10, batch_size=batch, ids=ids)
    warm = scan(model, ds, [layer], k=10, batch_size=batch, ids=ids)
    assert np.array_equal(np.asarray(cold.layers[layer].scores), np.asarray(warm.layers[layer].scores))
    out = {"model": name, "layer": layer, "images": int(n), "batch": batch,
           "forward_only_img_s": fwd, "scan_cold_img_s": cold.images_per_s, "scan_warm_img_s": warm.images_per_s,
           "scan_cold_over_forward": cold.images_per_s / fwd, "scan_warm_over_forward": warm.images_per_s / fwd,
           "warm_over_cold_speedup": warm.images_per_s / cold.images_per_s,
           "cache_hits": cache.hits, "cache_misses": cache.misses}
    return out


def bench_in_memory(batch: int = 256) -> dict:
    """The demo CNN on Fashion-MNIST test (already decoded arrays: no decode cost)."""
    from fvaudit.engine.activations import scan
    from fvaudit.engine.images import fashion_mnist
    from fvaudit.engine.models import load_model

    model = load_model("fmnist-cnn")
    ds = fashion_mnist("test")
    x = model.preprocess_many(ds.images)
    fwd = forward_only(model, x, batch)
    res = scan(model, ds, ["relu3"], k=10, batch_size=batch)
    return {"model": "fmnist-cnn", "image_set": ds.key, "images": len(ds), "forward_only_img_s": fwd,
            "scan_img_s": res.images_per_s, "scan_over_forward": res.images_per_s / fwd}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024, help="images for the demo CNN")
    ap.add_argument("--n-lite", type=int, default=192, help="images for EfficientNet-Lite0")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scan.json")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {"torch_threads": torch.get_num_threads(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        folder = make_folder(tmp / "images", max(args.n, args.n_lite))
        print(f"generated {max(args.n, args.n_lite)} JPEGs (500x375) in {time.perf_counter() - t:.1f} s")
        runs = [bench_in_memory(),
                bench_model("fmnist-cnn", folder, args.n, 256, "relu3", tmp / "cache"),
                bench_model("efficientnet-lite0", folder, args.n_lite, 32, "_blocks.15", tmp / "cache")]
    results["runs"] = runs
    print(f"\n{'model':20} {'input':28} {'forward-only':>13} {'scan cold':>10} {'scan warm':>10} "
          f"{'cold/fwd':>9} {'warm/fwd':>9} {'warm/cold':>9}")
    r = runs[0]
    print(f"{r['model']:20} {'fashion-mnist:test (arrays)':28} {r['forward_only_img_s']:13.0f} {r['scan_img_s']:10.0f} "
          f"{'—':>10} {r['scan_over_forward']:9.2f} {'—':>9} {'—':>9}")
    for r in runs[1:]:
        print(f"{r['model']:20} {'folder of JPEG 500x375':28} {r['forward_only_img_s']:13.0f} {r['scan_cold_img_s']:10.0f} "
              f"{r['scan_warm_img_s']:10.0f} {r['scan_cold_over_forward']:9.2f} {r['scan_warm_over_forward']:9.2f} "
              f"{r['warm_over_cold_speedup']:9.2f}")
    print("(images/s; baseline = forward-only on preprocessed tensors; warm = second pass, decoded-image cache)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
