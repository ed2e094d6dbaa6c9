"""A generated ImageNet-like folder for the input-pipeline benches (bench/scan.py, bench/attack.py).

JPEGs at 500×375 (quality 90, 10 class folders), each a random crop (30–100 % of the area,
4:3), flip and colour gain of a real photo, so decoding costs what a photo costs (flat or
noise images decode at other speeds). Photos: scikit-image's sample photos (astronaut,
chelsea, coffee, motorcycles, hubble, rocket, ...), read from an installed scikit-image or
from a folder of them (``--photos``; `pip download scikit-image --no-deps` and unzip
``skimage/data/*`` gives one, /tmp/fv-photos is looked at). Where neither exists (a bare
GPU machine that reaches no package index), the sources are generated: colour fields with
a natural image's 1/f amplitude spectrum (f^-1.5), whose 500×375 JPEGs were measured to
match the photo folder's (54 vs 51 KB per file, 0.79 vs 0.81 ms to decode with PIL). The
folder's stamp records which source made it. Generated once into a folder outside git and
reused.
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


def has_photos(folder: Path) -> bool:
    return sum((folder / n).exists() for n in PHOTO_NAMES) >= 5


def spectrum_photos(count: int = 12, seed: int = 0, size: tuple[int, int] = (640, 480),
                    exponent: float = 1.5) -> list[Image.Image]:
    """Photo stand-ins: colour fields with a 1/f^exponent amplitude spectrum (natural images'
    statistics), colour channels correlated as in photos."""
    rng = np.random.default_rng([seed, 1])
    w, h = size
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    mix = np.array([[1.0, 0.9, 0.8], [0.0, 0.4, 0.5], [0.0, 0.0, 0.3]])
    out = []
    for _ in range(count):
        spec = (rng.standard_normal((3, *f.shape)) + 1j * rng.standard_normal((3, *f.shape))) / f**exponent
        x = np.moveaxis(np.fft.irfft2(spec, (h, w)), 0, -1) @ mix
        x = (x - x.mean()) / x.std()
        out.append(Image.fromarray(np.clip(128 + 55 * x, 0, 255).astype(np.uint8)))
    return out


def load_photos(folder: Path) -> list[Image.Image]:
    photos = [Image.open(folder / n).convert("RGB") for n in PHOTO_NAMES if (folder / n).exists()]
    if len(photos) < 5:
        raise SystemExit(f"need the scikit-image sample photos in {folder} (found {len(photos)}); "
                         "install scikit-image or pass --photos")
    return photos


def ensure_folder(root: Path, n: int, photos: Path | None = None, classes: int = 10, seed: int = 0) -> Path:
    """``root`` holding ``n`` JPEGs (made once; a stamp file records what is there)."""
    stamp = root / "made.json"
    folder = photo_dir(photos)
    if photos is not None and not has_photos(folder):
        load_photos(folder)                    # asked for photos that are not there: says so and exits
    source = "photos" if has_photos(folder) else "spectrum"
    want = {"n": n, "size": list(SIZE), "classes": classes, "seed": seed, "source": source}
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if have["n"] >= n and {k: v for k, v in have.items() if k != "n"} == {k: v for k, v in want.items() if k != "n"}:
            return root
    srcs = load_photos(folder) if source == "photos" else spectrum_photos(seed=seed)
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
