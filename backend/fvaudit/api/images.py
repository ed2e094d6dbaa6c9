"""Pixels for the API: thumbnails (cached as content-addressed PNGs) and full images.

A folder image is read only if its real path (symlinks resolved, at the moment of
serving) lies under an allowed root: a file swapped for a symlink to ``/etc`` after
indexing is refused like one that was a symlink all along.
"""
from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from fvaudit.api.security import ImageSig
from fvaudit.config import get_settings
from fvaudit.db.tables import Image, ImageSet

THUMB = 112          # small images (28 px Fashion-MNIST) are upscaled, nearest, to this size
THUMB_MAX = 160      # larger images are shrunk to fit this box

#: The longest a browser may reuse an image fetched through a signed URL without asking
#: again. Signed URLs die with their share link (issue 13, item 6), but a cached copy sent
#: with a one-year ``immutable`` lifetime kept showing after the link was revoked: the
#: lifetime is now short, and never past the URL's own expiry. A revalidation is cheap
#: (``ETag`` → 304) and runs the signature and share-link check again.
SIGNED_MAX_AGE = 300
#: ... and for a URL handed out through a share link, whose revocation must show soon.
SHARED_MAX_AGE = 60


def image_cache_control(sig: ImageSig | None, now: float | None = None) -> str:
    """``Cache-Control`` of an image response, by how the request was allowed.

    A signed URL: ``private, max-age=N``, N the smaller of its remaining lifetime and
    :data:`SHARED_MAX_AGE` (handed out through a share link) or :data:`SIGNED_MAX_AGE`.
    No signature (an API token or a share-token header allowed it): ``private, no-cache``,
    so every reuse is checked again (and costs a 304 only).
    """
    if sig is None:
        return "private, no-cache"
    left = int(sig.expires - (time.time() if now is None else now))
    cap = SHARED_MAX_AGE if sig.share_id is not None else SIGNED_MAX_AGE
    return f"private, max-age={max(0, min(cap, left))}"


_lock = threading.Lock()
_arrays: "OrderedDict[str, object]" = OrderedDict()


def _array_set(source: str, limit: int | None, engine_key: str):
    """Fashion-MNIST splits, decoded once per process (two at most in memory).

    Opened with the set's ``limit``: a limited set is a class-stratified sample, so image
    id i of a limited set is not image i of the whole split. Opening the whole split here
    served, under each id, another image than the one the scans ranked (its label said
    "Sneaker" over a T-shirt)."""
    key = engine_key
    with _lock:
        if key in _arrays:
            _arrays.move_to_end(key)
            return _arrays[key]
    from fvaudit.engine.data.images import reopen_image_set

    # a set registered before limits became stratified samples reopens with its own rule
    ds = reopen_image_set(source, limit, engine_key, get_settings().engine_cache_dir)
    with _lock:
        _arrays[key] = ds
        while len(_arrays) > 2:
            _arrays.popitem(last=False)
    return ds


class OutsideAllowedRoots(OSError):
    """A folder image whose real path is outside the allowed roots (refused, as not found)."""


def servable_path(path: str | None) -> Path | None:
    """The real path of an indexed image file if it lies under an allowed root, else None."""
    if not path:
        return None
    return get_settings().is_allowed_path(path)


def load_pixels(set_row: ImageSet, image: Image) -> np.ndarray:
    if set_row.kind == "fashion-mnist":
        return _array_set(set_row.source, set_row.limit, set_row.engine_key).load_array(image.idx)
    from fvaudit.engine.data.images import decode_image

    real = servable_path(image.path)
    if real is None:
        raise OutsideAllowedRoots(f"image {image.idx}: its file resolves outside the allowed roots")
    return decode_image(real)


def png_bytes(arr: np.ndarray, thumb: bool) -> bytes:
    im = PILImage.fromarray(arr)
    if thumb:
        w, h = im.size
        if max(w, h) < THUMB:
            f = max(1, THUMB // max(w, h))
            im = im.resize((w * f, h * f), PILImage.NEAREST)
        else:
            im.thumbnail((THUMB_MAX, THUMB_MAX), PILImage.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
