"""Target images of the Slingshots attacks (SPEC §8.1): upload one, read it back, and read the
target a run's unit was attacked toward.

An upload is checked before anything is decoded (its size, its format from the file's own
header, its pixel count: a decompression bomb is refused from the header alone), then
decoded once and stored re-encoded as a PNG in the artifact store (kind ``target_image``),
so what a job reads is always a plain, bounded image. Every refusal is a 422 naming
``body.file`` and why.
"""
from __future__ import annotations

import io
import warnings
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from fvaudit.api.deps import DB, CurrentUser, IdPath, Who, get_run_for
from fvaudit.api.serialize import unit_target
from fvaudit.db.tables import Artifact
from fvaudit.jobs.validate import TARGET_ARTIFACT_KIND, FieldError, target_png
from fvaudit.store import get_store

router = APIRouter(tags=["target images"])

#: the largest upload read (bytes), and the largest image decoded (pixels, and per side)
MAX_TARGET_BYTES = 8 * 2**20
MAX_TARGET_PIXELS = 4096 * 4096
MAX_TARGET_SIDE = 8192
FORMATS = {"PNG": "PNG", "JPEG": "JPEG"}


class TargetImageOut(BaseModel):
    artifact_id: int = Field(description="use as target_images: [{artifact_id}] in an attack's spec")
    width: int
    height: int
    mode: str = Field(description="the stored PNG's mode: L (grey) or RGB")
    format: str = Field(description="the uploaded file's format")
    size_bytes: int
    url: str


def _field(why: str) -> FieldError:
    return FieldError(("body", "file"), why)


def decode_target(data: bytes) -> tuple[bytes, dict]:
    """Checked, decoded and re-encoded as PNG: (png bytes, facts). Raises FieldError (422)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _field("empty file")
    try:
        im = Image.open(io.BytesIO(data))        # reads the header only
    except UnidentifiedImageError:
        raise _field("not an image: upload a PNG or JPEG") from None
    except Image.DecompressionBombError as e:    # PIL's own guard, from the header's size
        raise _field(f"image refused (decompression bomb guard): {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _field(f"cannot read the image header: {e}") from None
    fmt = im.format or "?"
    if fmt not in FORMATS:
        raise _field(f"unsupported image format {fmt}: upload a PNG or JPEG")
    w, h = im.size
    if w < 1 or h < 1:
        raise _field(f"an image of {w}×{h} pixels has nothing to aim at")
    if w > MAX_TARGET_SIDE or h > MAX_TARGET_SIDE or w * h > MAX_TARGET_PIXELS:
        raise _field(f"image of {w}×{h} pixels refused (decompression bomb guard): at most {MAX_TARGET_SIDE} "
                     f"pixels a side and {MAX_TARGET_PIXELS:,} in all")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _field(f"image refused (decompression bomb guard): {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _field(f"cannot decode the {fmt} image: {e}") from None
    mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
    return target_png(im.convert(mode)), {"width": w, "height": h, "mode": mode, "format": fmt}


@router.post("/target-images", response_model=TargetImageOut, status_code=201,
             summary="Upload a Slingshots target image (PNG or JPEG)",
             responses={422: {"description": "empty, too large, not a PNG/JPEG, undecodable, or too many pixels "
                                             "(decompression bombs): the detail names body.file and why"}})
async def upload_target(user: CurrentUser, db: DB,
                        file: Annotated[UploadFile, File(description="a PNG or JPEG, at most 8 MiB and 4096² pixels")]):
    buf = bytearray()
    while chunk := await file.read(1 << 20):
        buf += chunk
        if len(buf) > MAX_TARGET_BYTES:
            raise _field(f"file larger than {MAX_TARGET_BYTES // 2**20} MiB")
    png, facts = await run_in_threadpool(decode_target, bytes(buf))
    art = get_store().put_bytes(db, png, TARGET_ARTIFACT_KIND, ".png")
    db.commit()
    return TargetImageOut(artifact_id=art.id, size_bytes=len(buf), url=f"/api/v1/target-images/{art.id}", **facts)


def _png(art: Artifact, request: Request) -> Response:
    from fvaudit.api.routers.runs import _png as png_response

    return png_response(art, request)


@router.get("/target-images/{artifact_id}", response_class=Response, responses={200: {"content": {"image/png": {}}}},
            summary="An uploaded target image (PNG)")
def target_image(artifact_id: IdPath, request: Request, db: DB, who: Who):
    art = db.get(Artifact, artifact_id)
    if art is None or art.kind != TARGET_ARTIFACT_KIND or who.user is None:
        raise HTTPException(404, f"target image {artifact_id} not found")
    return _png(art, request)


@router.get("/runs/{run_id}/layers/{layer}/units/{unit}/target", response_class=Response,
            responses={200: {"content": {"image/png": {}}}}, tags=["runs"],
            summary="The target image a Slingshots run aimed the unit's synthetic visualization at")
def run_unit_target(run_id: IdPath, layer: str, unit: int, request: Request, db: DB, who: Who):
    run = get_run_for(db, who, run_id)
    art = unit_target(db, run, layer, unit)
    if art is None:
        raise HTTPException(404, f"run {run_id} aimed no target at unit {unit} of {layer}")
    return _png(art, request)
