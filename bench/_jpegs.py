"""A generated ImageNet-like folder for the input-pipeline benches (bench/scan.py, bench/attack.py).

JPEGs at 500×375 (quality 90, 10 class folders), each a random crop (30–100 % of the area,
4:3), flip and colour gain of a real photo, so decoding costs what a photo costs (flat or
noise images decode at other speeds). Photos: scikit-image's sample photos (astronaut,
chelsea, coffee, motorcycles, hubble, rocket, ...), read from an installed scikit-image or
from a folder of them (``--photos``; `pip download scikit-image --no-deps` and unzip
``skimage/data/*`` gives one). Generated once into a folder outside git and reused.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (500, 375)
PHOTO_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png",
               "hubble_deep_field.jpg", "rocket.jpg", "retina.jpg", "ihc.png", "brick.png", "grass.png",
               "gravel.png", "camera.png", "coins.png", "moon.png", "color.png")


def photo_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    try:
        import skimage

        return Path(skimage.__file__).parent / "data"
    except ImportError:
        return Path("/tmp/fv-photos")


def load_photos(folder: Path) -> list[Image.Image]:
    photos = [Image.open(folder / n).convert("RGB") for n in PHOTO_NAMES if (folder / n).exists()]
    if len(photos) < 5:
        raise SystemExit(f"need the scikit-image sample photos in {folder} (found {len(photos)}); "
                         "install scikit-image or pass --photos")
    return photos


def ensure_folder(root: Path, n: int, photos: Path | None = None, classes: int = 10, seed: int = 0) -> Path:
    """``root`` holding ``n`` JPEGs (made once; a stamp file records what is there)."""
    stamp = root / "made.json"
    want = {"n": n, "size": list(SIZE), "classes": classes, "seed": seed}
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if have["n"] >= n and {k: v for k, v in have.items() if k != "n"} == {k: v for k, v in want.items() if k != "n"}:
            return root
    srcs = load_photos(photo_dir(photos))
    rng = np.random.default_rng(seed)
    for i in range(n):
        src = srcs[int(rng.integers(len(srcs)))]
        w, h = src.size
        area = rng.uniform(0.3, 1.0) * w * h
        cw = int(min(w, np.sqrt(area * 4 / 3)))
        ch = int(min(h, cw * 3 / 4))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize(SIZE, Image.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(im, dtype=np.float32) * rng.uniform(0.8, 1.2, size=3)
        d = root / f"class_{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(d / f"{i:06d}.jpg", quality=90)
    stamp.write_text(json.dumps(want))
    return root
