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
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

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


class DecodeCache:
    """Decoded pixels on disk, keyed by the file's path, size and mtime.

    Decoding a JPEG/PNG dominates a scan's input cost; reading back an ``.npy`` of the
    same pixels is several times cheaper. A changed file gets a new key.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def _key(self, path: Path) -> Path:
        st = path.stat()
        h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npy"

    def load(self, path: Path) -> np.ndarray:
        key = self._key(path)
        if key.exists():
            try:
                arr = np.load(key, allow_pickle=False)
                with self._lock:
                    self.hits += 1
                return arr
            except (OSError, ValueError):
                pass  # a torn cache file: decode again and overwrite it
        arr = decode_image(path)
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, key)
        with self._lock:
            self.misses += 1
        return arr


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8 pixels: ``[H, W]`` for grayscale, else ``[H, W, 3]``."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("L", "I;16", "I", "1"):
            im = im.convert("L")
        elif im.mode != "RGB":
            im = im.convert("RGB")
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

    def load_array(self, image_id: int) -> np.ndarray:
        path = self.paths[int(image_id)]
        if self.allowed_roots is not None:
            real = within_roots(path, self.allowed_roots)
            if real is None:
                raise OSError(f"{path}: {OUTSIDE_ROOTS}")
            path = real
        if self.cache is not None:
            return self.cache.load(path)
        return decode_image(path)

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


def open_image_set(spec: str | Path, cache_dir: Path | None = None, limit: int | None = None) -> ImageSet:
    """Open ``fashion-mnist:train`` / ``fashion-mnist:test`` or a folder path.

    ``limit`` keeps the first ``limit`` images (a deterministic subset, for quick runs).
    """
    s = str(spec)
    if s.startswith("fashion-mnist"):
        split = s.split(":", 1)[1] if ":" in s else "train"
        ds: ImageSet = fashion_mnist(split, download_root=cache_dir / "downloads" if cache_dir else None)
    else:
        cache = DecodeCache(cache_dir / "decoded") if cache_dir else None
        ds = FolderImageSet(s, cache=cache)
    if limit is not None:
        ds = subset(ds, np.arange(min(limit, len(ds))))
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

    def load_array(self, image_id: int) -> np.ndarray:
        return self.parent.load_array(int(self.parent_ids[int(image_id)]))

    def arrays(self, ids: Sequence[int]) -> np.ndarray:
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


@dataclass
class Batch:
    ids: np.ndarray          # ids of the images that decoded
    tensor: "object"         # torch.Tensor [b, C, H, W]
    failed: list[int] = field(default_factory=list)  # ids that failed to decode


def iter_batches(
    image_set: ImageSet,
    ids: Sequence[int],
    batch_size: int,
    preprocess_many: Callable[[list[np.ndarray]], "object"],
    workers: int = 2,
    on_skip: Callable[[int, str], None] | None = None,
) -> Iterator[Batch]:
    """Decode + preprocess batches, the next batch prepared in threads while one is used.

    A file that fails to decode is skipped: ``on_skip(id, reason)`` is called and the
    batch carries the ids that did decode.
    """
    ids = np.asarray(ids, dtype=np.int64)
    chunks = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    fast = hasattr(image_set, "arrays")

    def load_one(i: int) -> np.ndarray | str:
        try:
            return image_set.load_array(int(i))
        except (OSError, ValueError, SyntaxError) as exc:
            return f"{type(exc).__name__}: {exc}"

    pool = ThreadPoolExecutor(max_workers=max(1, workers)) if not fast else None

    def prepare(chunk: np.ndarray) -> Batch:
        if fast:
            arrays = list(image_set.arrays(chunk))  # type: ignore[attr-defined]
            return Batch(chunk, preprocess_many(arrays))
        loaded = list(pool.map(load_one, chunk))  # type: ignore[union-attr]
        good_ids, arrays, failed = [], [], []
        for i, a in zip(chunk, loaded):
            if isinstance(a, str):
                failed.append(int(i))
                if on_skip:
                    on_skip(int(i), a)
            else:
                good_ids.append(int(i))
                arrays.append(a)
        tensor = preprocess_many(arrays) if arrays else None
        return Batch(np.asarray(good_ids, dtype=np.int64), tensor, failed)

    prefetch = ThreadPoolExecutor(max_workers=1)
    try:
        future = prefetch.submit(prepare, chunks[0]) if chunks else None
        for n in range(len(chunks)):
            batch = future.result()  # type: ignore[union-attr]
            future = prefetch.submit(prepare, chunks[n + 1]) if n + 1 < len(chunks) else None
            yield batch
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True)


def load_tensor(
    image_set: ImageSet,
    ids: Sequence[int],
    preprocess_many: Callable[[list[np.ndarray]], "object"],
    pool: ThreadPoolExecutor | None = None,
) -> tuple[np.ndarray, "object"]:
    """Decode + preprocess the given ids into one batch; ids that fail to decode are dropped.

    Returns (ids that loaded, tensor). Used for training batches, drawn at random.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if hasattr(image_set, "arrays"):
        return ids, preprocess_many(list(image_set.arrays(ids)))  # type: ignore[attr-defined]

    def load_one(i: int):
        try:
            return image_set.load_array(int(i))
        except (OSError, ValueError, SyntaxError):
            return None

    loaded = list(pool.map(load_one, ids)) if pool is not None else [load_one(i) for i in ids]
    keep = [j for j, a in enumerate(loaded) if a is not None]
    if not keep:
        raise ImageSetError(f"none of {len(ids)} images of {image_set.key} could be decoded")
    return ids[keep], preprocess_many([loaded[j] for j in keep])
