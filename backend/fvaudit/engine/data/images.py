"""Image sets: stable integer ids, labels, class names, decoding with a cache.

Two sources (SPEC §1 needs "an image set D" with deterministic ids for tie-breaking):

* a folder of class subfolders (ImageNet / torchvision ImageFolder layout), ids in the
  sorted order of (class folder, file name); files that are not images are skipped at
  indexing, files whose pixels fail to decode are skipped at load time; both are
  counted and reported, never fatal; a symlink whose real path leaves the allowed
  roots is skipped at indexing without being opened, and refused at load time;
* Fashion-MNIST's IDX files (the Debian package `dataset-fashion-mnist`, else
  torchvision's download), ids = the row index in the IDX file.

A :class:`DecodeCache` keeps decoded pixels as ``.npy`` files keyed by (path, size,
mtime), so a second pass over the same folder reads arrays instead of decoding images.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
FASHION_MNIST_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


class ImageSetError(ValueError):
    """An image set cannot be opened or used (message names the path and the reason)."""


@dataclass
class SkippedImage:
    path: str
    reason: str


DEFAULT_CACHE_BYTES = 4 * 2**30   # the decode cache's bound when no setting says otherwise
_PX_HEADER = struct.Struct("<4sIII")  # magic, height, width, channels
_PX_MAGIC = b"FVpx"

log = logging.getLogger("fvaudit.engine.data.images")


class DecodeCache:
    """Model-input-size pixels on disk, bounded in bytes, least recently used evicted first.

    What it holds: :func:`decode_image` at a decode size ``S`` (the pixels the input
    pipeline feeds to a model's preprocessing, shorter side at most ``S``), one ``.px`` file
    per (file path, size, mtime, S): a 500×375 photo for a 224-pixel model is 341×256×3 =
    262 KB, not the 563 KB of its full resolution. A changed file gets a new key. The file
    is a 16-byte header (magic, height, width, channels) and the raw pixels: reading one
    back costs a read, where ``np.load``'s header parsing cost more than a small decode.

    Who does what (the input pipeline runs several processes on one cache):

    * any process reads (:meth:`read`, which touches the file's mtime: the LRU clock that
      survives restarts) and writes (:meth:`write`, atomic rename); each reports what it
      did as *events* (:meth:`drain`);
    * the process that owns the scan applies the events in order (:meth:`apply`): it keeps
      the byte total and evicts the least recently used files until the total is within
      ``max_bytes``. The bound is exact at every :meth:`apply`; between two, files written
      by workers and not yet applied (at most the batches in flight) may exceed it.

    A write that fails (a full disk: ENOSPC, a read-only folder) never makes an image
    unreadable: the decoded pixels are used, further writes by this process are skipped,
    and the owner warns once (:attr:`write_error`).
    """

    def __init__(self, root: Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if int(max_bytes) < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.write_error: str | None = None    # first failed write, as applied by the owner
        self._writes_off = False                # this process stopped writing after a failure
        self._events: list[tuple] = []
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()   # key -> bytes, least recently used first
        self.total_bytes = 0
        found = []
        for sub in self.root.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for f in os.scandir(sub):
                    if f.name.endswith(".px"):
                        st = f.stat()
                        found.append((st.st_mtime_ns, f"{sub.name}/{f.name}", st.st_size))
        for _, key, size in sorted(found):
            self._lru[key] = size
            self.total_bytes += size
        self._evict()

    @staticmethod
    def key(path: Path, size: int) -> str:
        """(absolute path, file size, mtime, decode size) hashed; image sets hold real paths."""
        st = os.stat(path)
        h = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{int(size)}".encode()).hexdigest()
        return f"{h[:2]}/{h}.px"

    @staticmethod
    def file_bytes(arr: np.ndarray) -> int:
        return _PX_HEADER.size + arr.nbytes

    def read(self, key: str) -> np.ndarray | None:
        f = self.root / key
        try:
            with open(f, "rb") as fh:
                data = bytearray(fh.read())
            magic, h, w, c = _PX_HEADER.unpack_from(data)
            if magic != _PX_MAGIC or len(data) != _PX_HEADER.size + h * w * c:
                raise ValueError("torn or foreign cache file")
            os.utime(f)
        except (OSError, ValueError, struct.error):   # absent, evicted meanwhile, or torn: decode again
            return None
        arr = np.frombuffer(data, dtype=np.uint8, offset=_PX_HEADER.size)
        with self._lock:
            self._events.append(("hit", key, 0))
        return arr.reshape((h, w) if c == 1 else (h, w, c))

    def _write_file(self, f: Path, arr: np.ndarray) -> None:
        tmp = f.with_name(f"{f.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        h, w = arr.shape[:2]
        c = arr.shape[2] if arr.ndim == 3 else 1
        payload = _PX_HEADER.pack(_PX_MAGIC, h, w, c) + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
        try:
            try:
                fh = open(tmp, "wb")
            except FileNotFoundError:
                f.parent.mkdir(parents=True, exist_ok=True)
                fh = open(tmp, "wb")
            with fh:
                fh.write(payload)
            os.replace(tmp, f)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write(self, key: str, arr: np.ndarray) -> None:
        """Store ``arr`` under ``key``; a failure is recorded (once) and never raised."""
        if self._writes_off:
            return
        f = self.root / key
        try:
            self._write_file(f, arr)
            nbytes = self.file_bytes(arr)
        except OSError as exc:
            self._writes_off = True
            with self._lock:
                self._events.append(("write_failed", key, f"{type(exc).__name__}: {exc}"))
            return
        with self._lock:
            self._events.append(("miss", key, nbytes))

    def load(self, path: Path, size: int) -> np.ndarray:
        """The cached pixels of ``path`` at decode size ``size``, decoding (and storing) on a miss."""
        key = self.key(path, size)
        arr = self.read(key)
        if arr is None:
            arr = decode_image(path, size)
            self.write(key, arr)
        return arr

    def drain(self) -> list[tuple]:
        """Events recorded by this process since the last drain (to hand to the owner)."""
        with self._lock:
            ev, self._events = self._events, []
        return ev

    def apply(self, events: Sequence[tuple]) -> list[str]:
        """Owner side: account reads and writes in order, evict down to the bound.

        Returns the messages of write failures seen for the first time (to warn once)."""
        new_errors = []
        for kind, key, arg in events:
            if kind == "hit":
                self.hits += 1
                if key in self._lru:
                    self._lru.move_to_end(key)
                else:   # written by another process since this one indexed the folder
                    try:
                        size = (self.root / key).stat().st_size
                    except OSError:
                        continue
                    self._lru[key] = size
                    self.total_bytes += size
            elif kind == "miss":
                self.misses += 1
                self.total_bytes -= self._lru.pop(key, 0)
                self._lru[key] = int(arg)
                self.total_bytes += int(arg)
            elif kind == "write_failed":
                self.misses += 1
                if self.write_error is None:
                    self.write_error = str(arg)
                    new_errors.append(str(arg))
            self._evict()
        return new_errors

    def _evict(self) -> None:
        while self.total_bytes > self.max_bytes and self._lru:
            key, size = self._lru.popitem(last=False)
            self.total_bytes -= size
            self.evictions += 1
            (self.root / key).unlink(missing_ok=True)

    def keys(self) -> list[str]:
        """Cached keys, least recently used first (what eviction removes first)."""
        return list(self._lru)

    def sync(self) -> list[str]:
        """In-process use: apply this process's own events; warn once about a failed write."""
        errors = self.apply(self.drain())
        for e in errors:
            log.warning("decode cache %s: write failed (%s); the image was used, the cache is skipped", self.root, e)
        return errors


try:  # libjpeg-turbo's DCT-scaled decode without Pillow's per-call overhead: 1.5x faster per JPEG
    import simplejpeg as _simplejpeg   # (measured on 500x375 photos), pixels identical to Image.draft's
except ImportError:  # pragma: no cover - optional: Pillow gives the same pixels, slower
    _simplejpeg = None

_JPEG_SUFFIXES = {".jpg", ".jpeg"}


def _draft_scale(w: int, h: int, size: int) -> int:
    """The DCT scale ``Image.draft(None, (size, size))`` picks: the largest of 8, 4, 2, 1 that
    keeps both sides at least ``size`` (Pillow's JpegImageFile.draft)."""
    q = min(w // size, h // size)
    return next((s for s in (8, 4, 2) if q >= s), 1)


def _decode_jpeg_scaled(path: Path, size: int) -> np.ndarray | None:
    """simplejpeg at the scale Pillow's draft would pick; None when it cannot (CMYK, not a JPEG, a
    scale it would choose differently): Pillow decodes then. Pixels equal Pillow's, checked in
    tests/engine/test_pipeline.py."""
    data = Path(path).read_bytes()
    try:
        h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("Gray", "YCbCr", "RGB"):
            return None
        s = _draft_scale(w, h, size)
        oh, ow = -(-h // s), -(-w // s)
        arr = _simplejpeg.decode_jpeg(data, colorspace="GRAY" if colorspace == "Gray" else "RGB",
                                      min_height=oh, min_width=ow)
    except ValueError:
        return None
    if arr.shape[:2] != (oh, ow):
        return None
    return np.ascontiguousarray(arr[:, :, 0]) if colorspace == "Gray" else arr


def decode_image(path: Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 pixels: ``[H, W]`` for grayscale, else ``[H, W, 3]``.

    ``size=None``: full resolution (display, galleries, embedders). ``size=S``: the input
    pipeline's pixels for a model that needs a shorter side of about ``S``: a JPEG is
    decoded with DCT scaling (``Image.draft``: 1/2, 1/4 or 1/8 while both sides stay ≥ S,
    several times cheaper than a full decode; simplejpeg when installed, same pixels), then
    an image whose shorter side is still above ``S`` is resized (bilinear, antialiased) so
    that its shorter side is ``S`` and its longer side ``round(long·S/short)``, the rule of
    the models' own resize, which is then the identity. Deterministic: the same file and
    ``S`` give the same pixels.
    """
    if size is not None and _simplejpeg is not None and Path(path).suffix.lower() in _JPEG_SUFFIXES:
        arr = _decode_jpeg_scaled(path, size)
        if arr is not None:
            return _to_decode_size(Image.fromarray(arr), size) if min(arr.shape[:2]) > size else arr
    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            im.draft(None, (int(size), int(size)))
        im.load()
        if im.mode in ("L", "I;16", "I", "1"):
            im = im.convert("L")
        elif im.mode != "RGB":
            im = im.convert("RGB")
        if size is not None and min(im.size) > size:
            return _to_decode_size(im, size)
        return np.asarray(im, dtype=np.uint8).copy()


def _to_decode_size(im: Image.Image, size: int) -> np.ndarray:
    """Shorter side ``size``, longer side ``round(long·size/short)``, bilinear (antialiased)."""
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((size if w <= h else round(w * s), size if h <= w else round(h * s)), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).copy()


class ImageSet:
    """Base: ``len``, ``labels[id]``, ``class_names``, ``load_array(id)``, ``key``."""

    key: str
    class_names: list[str]
    labels: np.ndarray
    skipped: list[SkippedImage]

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def ids(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64)

    def load_array(self, image_id: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_input(self, image_id: int, size: int | None = None) -> np.ndarray:
        """The pixels the input pipeline hands to a model's preprocessing (``size``: its decode
        size, see :func:`decode_image`). In-memory sets return their arrays as they are."""
        return self.load_array(image_id)

    def load_pil(self, image_id: int) -> Image.Image:
        return Image.fromarray(self.load_array(image_id))

    def describe(self, image_id: int) -> str:
        return f"{self.key}#{image_id}"

    def label_name(self, image_id: int) -> str:
        return self.class_names[int(self.labels[image_id])]

    def class_ids(self, class_index: int) -> np.ndarray:
        """All image ids whose label is ``class_index``."""
        if not 0 <= class_index < len(self.class_names):
            raise ImageSetError(
                f"class index {class_index} out of range: {self.key} has {len(self.class_names)} classes"
            )
        return np.flatnonzero(self.labels == class_index).astype(np.int64)

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by name or index, with an error that lists the classes."""
        if isinstance(name_or_index, (int, np.integer)) or str(name_or_index).isdigit():
            idx = int(name_or_index)
            if 0 <= idx < len(self.class_names):
                return idx
        elif name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        raise ImageSetError(
            f"unknown class {name_or_index!r} in {self.key}; classes: {', '.join(self.class_names[:20])}"
            + (" ..." if len(self.class_names) > 20 else "")
        )

    def check_ids(self, ids: Sequence[int], what: str = "image id") -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = arr[(arr < 0) | (arr >= len(self))]
        if bad.size:
            raise ImageSetError(f"{what} {int(bad[0])} out of range: {self.key} has {len(self)} images")
        return arr


OUTSIDE_ROOTS = "symlink to a path outside the allowed roots"


def within_roots(path: Path, roots: Sequence[Path]) -> Path | None:
    """The real path of ``path`` (every symlink resolved) if it lies under one of ``roots``
    (themselves real paths), else None."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    return real if any(real == r or r in real.parents for r in roots) else None


class FolderImageSet(ImageSet):
    """A folder whose subfolders are classes (sorted), holding image files (sorted).

    Every class folder and file is kept only if its real path lies under
    ``allowed_roots`` (default: the folder itself): a symlink inside the folder that
    points elsewhere (a file, a folder, ``/etc/passwd``) is never opened, and is
    reported in ``skipped`` with the reason :data:`OUTSIDE_ROOTS`.
    """

    def __init__(self, root: str | Path, cache: DecodeCache | None = None, verify: bool = True,
                 allowed_roots: Sequence[str | Path] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ImageSetError(f"image folder {root} does not exist or is not a directory")
        self.root = root.resolve()
        self.allowed_roots = [Path(os.path.realpath(r)) for r in allowed_roots] if allowed_roots else [self.root]
        if within_roots(self.root, self.allowed_roots) is None:
            raise ImageSetError(f"image folder {root} resolves to {self.root}, outside the allowed roots")
        self.key = f"folder:{self.root}"
        self.cache = cache
        self.skipped: list[SkippedImage] = []
        class_dirs = []
        for d in sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            if within_roots(d, self.allowed_roots) is None:
                self.skipped.append(SkippedImage(str(d), OUTSIDE_ROOTS))
            else:
                class_dirs.append(d)
        if not class_dirs:
            raise ImageSetError(f"image folder {root} has no class subfolders (expected root/<class>/<image>)"
                                + (f" inside the allowed roots ({len(self.skipped)} skipped)" if self.skipped else ""))
        self.class_names = [d.name for d in class_dirs]
        paths: list[Path] = []
        labels: list[int] = []
        for label, d in enumerate(class_dirs):
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                if within_roots(p, self.allowed_roots) is None:     # decided before anything opens it
                    self.skipped.append(SkippedImage(str(p), OUTSIDE_ROOTS))
                    continue
                if not p.is_file():
                    continue
                if verify:
                    reason = _verify_header(p)
                    if reason:
                        self.skipped.append(SkippedImage(str(p), reason))
                        continue
                paths.append(p)
                labels.append(label)
        if not paths:
            raise ImageSetError(
                f"image folder {root} holds no readable images"
                + (f" ({len(self.skipped)} unreadable files skipped)" if self.skipped else "")
            )
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    @classmethod
    def from_index(cls, key: str, class_names: Sequence[str], paths: Sequence[str | Path], labels: Sequence[int],
                   cache: DecodeCache | None = None,
                   allowed_roots: Sequence[str | Path] | None = None) -> "FolderImageSet":
        """A folder set exactly as indexed earlier (ids, paths, labels stored elsewhere, e.g. a DB).

        Files added or removed since do not shift ids: the set is its index. With
        ``allowed_roots``, a file whose real path has left them since (swapped for a
        symlink) fails to load (an OSError: the scan skips it and says why).
        """
        if len(paths) == 0:
            raise ImageSetError(f"image set {key} is empty")
        self = cls.__new__(cls)
        self.key = key
        self.root = Path(paths[0]).parent.parent
        self.cache = cache
        self.skipped = []
        self.allowed_roots = [Path(os.path.realpath(r)) for r in allowed_roots] if allowed_roots else None
        self.class_names = list(class_names)
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        return self

    def _real_path(self, image_id: int) -> Path:
        path = self.paths[int(image_id)]
        if self.allowed_roots is not None:
            real = within_roots(path, self.allowed_roots)
            if real is None:
                raise OSError(f"{path}: {OUTSIDE_ROOTS}")
            path = real
        return path

    def load_array(self, image_id: int) -> np.ndarray:
        """Full-resolution pixels (display, embedders); never cached."""
        return decode_image(self._real_path(image_id))

    def load_input(self, image_id: int, size: int | None = None, use_cache: bool = True) -> np.ndarray:
        path = self._real_path(image_id)
        if size is not None and use_cache and self.cache is not None:
            return self.cache.load(path, size)
        return decode_image(path, size)

    def describe(self, image_id: int) -> str:
        return str(self.paths[int(image_id)])


def _verify_header(path: Path) -> str | None:
    """Cheap check that a file is an image Pillow can read; returns the reason if not."""
    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


class ArrayImageSet(ImageSet):
    """Images already decoded in memory (Fashion-MNIST, generated test sets)."""

    def __init__(self, key: str, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
        if len(images) == 0:
            raise ImageSetError(f"image set {key} is empty")
        if len(images) != len(labels):
            raise ImageSetError(f"image set {key}: {len(images)} images but {len(labels)} labels")
        self.key = key
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.skipped = []

    def load_array(self, image_id: int) -> np.ndarray:
        return self.images[int(image_id)]

    def arrays(self, ids: Sequence[int]) -> np.ndarray:
        return self.images[np.asarray(ids, dtype=np.int64)]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array (uint8 data only)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4:
        raise ImageSetError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ImageSetError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if body.size != int(np.prod(shape)):
        raise ImageSetError(f"{path}: IDX header says {shape} but holds {body.size} values")
    return body.reshape(shape)


def _find_fashion_mnist(download_root: Path | None) -> Path:
    names = ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
    env = os.environ.get("FVAUDIT_FASHION_MNIST_DIR")
    candidates = ([Path(env)] if env else []) + FASHION_MNIST_DIRS
    if download_root is not None:
        candidates.append(download_root / "FashionMNIST" / "raw")
    for d in candidates:
        if all((d / n).exists() or (d / n[:-3]).exists() for n in names):
            return d
    if download_root is None:
        raise ImageSetError(
            "Fashion-MNIST not found in " + ", ".join(map(str, candidates))
            + "; install the Debian package dataset-fashion-mnist or allow a download"
        )
    from fvaudit import _tv_guard  # noqa: F401
    import torchvision

    try:
        torchvision.datasets.FashionMNIST(str(download_root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(download_root), train=False, download=True)
    except Exception as exc:  # network errors have many types
        raise ImageSetError(
            f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist) and the download "
            f"into {download_root} failed: {exc}"
        ) from exc
    return download_root / "FashionMNIST" / "raw"


def _idx_path(d: Path, name: str) -> Path:
    return d / name if (d / name).exists() else d / name[:-3]


def fashion_mnist(split: str = "train", download_root: Path | None = None) -> ArrayImageSet:
    """Fashion-MNIST ``train`` (60k) or ``test`` (10k): 28×28 uint8, 10 classes."""
    if split not in ("train", "test"):
        raise ImageSetError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
    d = _find_fashion_mnist(download_root)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx_path(d, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(_idx_path(d, f"{prefix}-labels-idx1-ubyte.gz"))
    return ArrayImageSet(f"fashion-mnist:{split}", images, labels, FASHION_MNIST_CLASSES)


def stratified_ids(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded, class-stratified sample of ``n`` ids (sorted), the rule of a limited image set.

    Why not the first ``n`` ids: folder ids run in class order, so a limited ImageNet
    folder would hold only its first classes. The rule, deterministic given (labels, n, seed):

    1. class ``c`` with ``n_c`` of the ``N`` images gets ``floor(n·n_c/N)`` places; the
       places left over go one each to the classes with the largest remainders
       ``n·n_c/N − floor(…)``, ties to the smaller class index (largest remainder method),
       so every class is represented in proportion, within one image;
    2. within class ``c``, its ids are shuffled by ``numpy.random.default_rng([seed, c])``
       and the first places taken (a class's pick does not depend on the other classes);
    3. the chosen ids are sorted, so the subset keeps the parent's order.

    ``n ≥ N`` keeps every id.
    """
    labels = np.asarray(labels, dtype=np.int64)
    total = len(labels)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    if n <= 0:
        raise ImageSetError(f"limit must be a positive integer, got {n}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / total)
    quota = np.floor(exact).astype(np.int64)
    left = n - int(quota.sum())
    if left:
        order = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), c))
        for c in order[:left]:
            quota[c] += 1
    chosen = []
    for c, q in zip(classes, quota):
        if q:
            ids = np.flatnonzero(labels == c)
            chosen.append(ids[np.random.default_rng([int(seed), int(c)]).permutation(len(ids))[:q]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


#: how a limit picks its images: ``stratified`` (:func:`stratified_ids`, the rule since
#: 2026-12-03) or ``first`` (the first ``limit`` ids, the rule before; sets and run
#: directories made then are reopened with it, so their stored ids keep naming the same images)
SAMPLE_RULES = ("stratified", "first")


def open_image_set(spec: str | Path, cache_dir: Path | None = None, limit: int | None = None, seed: int = 0,
                   cache_bytes: int = DEFAULT_CACHE_BYTES, sample: str = "stratified") -> ImageSet:
    """Open ``fashion-mnist:train`` / ``fashion-mnist:test`` or a folder path.

    ``limit`` keeps a seeded class-stratified sample of ``limit`` images
    (:func:`stratified_ids`), for quick runs and the API's image-set limit; ``sample="first"``
    keeps the first ``limit`` ids instead (the earlier rule, for sets made with it). With
    ``cache_dir``, a folder set gets a decode cache under it bounded by ``cache_bytes``.
    """
    if sample not in SAMPLE_RULES:
        raise ImageSetError(f"sample must be one of {', '.join(SAMPLE_RULES)}, got {sample!r}")
    s = str(spec)
    if s.startswith("fashion-mnist"):
        split = s.split(":", 1)[1] if ":" in s else "train"
        ds: ImageSet = fashion_mnist(split, download_root=cache_dir / "downloads" if cache_dir else None)
    else:
        cache = DecodeCache(cache_dir / "decoded", cache_bytes) if cache_dir else None
        ds = FolderImageSet(s, cache=cache)
    if limit is not None:
        if sample == "first":
            ds = subset(ds, np.arange(min(int(limit), len(ds))))
        else:
            ds = subset(ds, stratified_ids(ds.labels, int(limit), seed))
    return ds


def reopen_image_set(spec: str | Path, limit: int | None, key: str, cache_dir: Path | None = None) -> ImageSet:
    """Reopen a set recorded earlier as ``key`` (a registered set, a run directory's scan).

    A limited set recorded before limits became stratified samples holds the first
    ``limit`` ids; the recorded key (which digests the ids) says which rule made it, so its
    stored ids keep naming the same images. Raises :class:`ImageSetError` when neither
    rule gives the recorded key (the source changed under it).
    """
    ds = open_image_set(spec, cache_dir=cache_dir, limit=limit)
    if ds.key != key and limit is not None:
        legacy = open_image_set(spec, cache_dir=cache_dir, limit=limit, sample="first")
        if legacy.key == key:
            return legacy
    if ds.key != key:
        raise ImageSetError(f"{spec} was recorded as {key} but now opens as {ds.key}: its stored ids would name "
                            "other images")
    return ds


class SubsetImageSet(ImageSet):
    """A view holding some ids of a parent set, renumbered 0..n-1; ``parent_ids`` maps back."""

    def __init__(self, parent: ImageSet, parent_ids: np.ndarray) -> None:
        if len(parent_ids) == 0:
            raise ImageSetError(f"subset of {parent.key} is empty")
        self.parent = parent
        self.parent_ids = np.asarray(parent_ids, dtype=np.int64)
        self.key = f"{parent.key}[{_ids_digest(self.parent_ids)}]"
        self.labels = parent.labels[self.parent_ids]
        self.class_names = parent.class_names
        self.skipped = parent.skipped
        if hasattr(parent, "arrays"):   # in-memory parents only: "arrays" marks the fast path
            self.arrays = self._arrays

    def load_array(self, image_id: int) -> np.ndarray:
        return self.parent.load_array(int(self.parent_ids[int(image_id)]))

    def load_input(self, image_id: int, size: int | None = None, **kw) -> np.ndarray:
        return self.parent.load_input(int(self.parent_ids[int(image_id)]), size, **kw)

    @property
    def cache(self) -> "DecodeCache | None":
        return getattr(self.parent, "cache", None)

    def _arrays(self, ids: Sequence[int]) -> np.ndarray:
        return self.parent.arrays(self.parent_ids[np.asarray(ids, dtype=np.int64)])  # type: ignore[attr-defined]

    def describe(self, image_id: int) -> str:
        return self.parent.describe(int(self.parent_ids[int(image_id)]))


def _ids_digest(ids: np.ndarray) -> str:
    if len(ids) and np.array_equal(ids, np.arange(len(ids))):
        return f":{len(ids)}"
    return hashlib.sha1(ids.tobytes()).hexdigest()[:12]


def subset(parent: ImageSet, ids: Sequence[int]) -> ImageSet:
    ids = parent.check_ids(ids)
    return SubsetImageSet(parent, ids)
