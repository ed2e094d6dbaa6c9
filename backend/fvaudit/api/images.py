"""Pixels for the API: thumbnails (cached as content-addressed PNGs) and full images."""
from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image as PILImage

from fvaudit.config import get_settings
from fvaudit.db.models import Image, ImageSet

THUMB = 112          # small images (28 px Fashion-MNIST) are upscaled, nearest, to this size
THUMB_MAX = 160      # larger images are shrunk to fit this box

_lock = threading.Lock()
_arrays: "OrderedDict[str, object]" = OrderedDict()


def _array_set(source: str):
    """Fashion-MNIST splits, decoded once per process (two at most in memory)."""
    with _lock:
        if source in _arrays:
            _arrays.move_to_end(source)
            return _arrays[source]
    from fvaudit.engine.images import open_image_set

    ds = open_image_set(source, cache_dir=get_settings().engine_cache_dir)
    with _lock:
        _arrays[source] = ds
        while len(_arrays) > 2:
            _arrays.popitem(last=False)
    return ds


def load_pixels(set_row: ImageSet, image: Image) -> np.ndarray:
    if set_row.kind == "fashion-mnist":
        return _array_set(set_row.source).load_array(image.idx)
    from fvaudit.engine.images import decode_image
    from pathlib import Path

    return decode_image(Path(image.path))


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
