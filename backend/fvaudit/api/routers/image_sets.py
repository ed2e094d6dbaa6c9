"""Image sets: registration under allowed roots, class samples, thumbnails and full images."""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated

import hashlib

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as FPath
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import select

from fvaudit.api.deps import DB, CurrentUser, IdPath, Principal, Who, unauthorized
from fvaudit.api.images import load_pixels, png_bytes, servable_path
from fvaudit.api.registration import register_image_set
from fvaudit.api.schemas import ImageSetCreate, ImageSetDetail, ImageSetOut, Sample
from fvaudit.api.security import check_image_sig
from fvaudit.api.serialize import classes_of, image_urls, signing_key
from fvaudit.db.models import Image, ImageSet, Run
from fvaudit.db.session import session_scope
from fvaudit.store import get_store

router = APIRouter(prefix="/image-sets", tags=["image sets"])
ImageIdPath = Annotated[int, FPath(ge=0, le=2**31 - 1, examples=[0])]
CACHE = "private, max-age=31536000, immutable"


def set_out(s: ImageSet, detail: bool = False) -> dict:
    d = {"id": s.id, "name": s.name, "source": s.source, "kind": s.kind, "size": s.size, "limit": s.limit,
         "classes": list(s.classes or []), "created_at": s.created_at}
    if detail:
        d["skipped"] = list(s.skipped or [])
    return d


def _get_set(db, set_id: int) -> ImageSet:
    s = db.get(ImageSet, set_id)
    if s is None:
        raise HTTPException(404, f"image set {set_id} not found")
    return s


@router.get("", response_model=list[ImageSetOut], summary="Registered image sets")
def list_sets(db: DB, user: CurrentUser):
    return [set_out(s) for s in db.scalars(select(ImageSet).order_by(ImageSet.id))]


def _register(user_id: int, body: ImageSetCreate) -> int:
    with session_scope() as db:
        return register_image_set(db, user_id, body.name, body.source, body.limit).id


@router.post("", response_model=ImageSetDetail, status_code=201,
             summary="Register an image set: fashion-mnist:train|test or a class-folder tree under an allowed root",
             responses={422: {"description": "path outside the allowed roots, not a folder, or no readable images"}})
async def create_set(body: ImageSetCreate, user: CurrentUser, db: DB):
    sid = await run_in_threadpool(_register, user.id, body)
    return set_out(db.get(ImageSet, sid), detail=True)


@router.get("/{set_id}", response_model=ImageSetDetail, summary="One image set, with the files skipped at indexing")
def get_set(set_id: IdPath, db: DB, user: CurrentUser):
    return set_out(_get_set(db, set_id), detail=True)


@router.get("/{set_id}/classes/{class_index}/samples", response_model=list[Sample],
            summary="Images of one class (the decoy picker)")
def samples(set_id: IdPath, class_index: Annotated[int, FPath(ge=0, le=100_000)], db: DB,
            user: CurrentUser, n: Annotated[int, Query(ge=1, le=500)] = 8,
            offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    s = _get_set(db, set_id)
    classes = list(s.classes or [])
    if class_index >= len(classes):
        raise HTTPException(404, f"class {class_index} not found: {s.name} has {len(classes)} classes")
    rows = db.execute(select(Image.idx, Image.label).where(Image.image_set_id == set_id, Image.label == class_index)
                      .order_by(Image.idx).offset(offset).limit(n)).all()
    out = []
    for idx, label in rows:
        thumb, full = image_urls(set_id, idx)
        out.append({"image_id": idx, "label": label, "label_name": classes[label], "thumb_url": thumb,
                    "full_url": full})
    return out


def _authorize_image(db, who: Principal, set_id: int, image_id: int, sig: str | None) -> None:
    if check_image_sig(signing_key(), set_id, image_id, sig, db):
        return
    if who.user is not None:
        return
    if who.share is not None:
        run = db.get(Run, who.share.run_id)
        if run is not None and set_id in (run.train_set_id, run.val_set_id):
            return
        raise HTTPException(404, "image not found")
    raise unauthorized("images need a signed URL (from the API), an API token or a share link")


def _image(db, set_id: int, image_id: int) -> tuple[ImageSet, Image]:
    s = _get_set(db, set_id)
    img = db.scalar(select(Image).where(Image.image_set_id == set_id, Image.idx == image_id))
    if img is None:
        raise HTTPException(404, f"image {image_id} not found in image set {set_id}")
    return s, img


SigQuery = Annotated[str | None, Query(max_length=64, description="signature from a URL the API handed out")]


@router.get("/{set_id}/images/{image_id}/thumb", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "PNG thumbnail (small images upscaled, nearest)"},
                       304: {"description": "not modified"}},
            summary="Thumbnail (PNG, immutable cache)")
def thumb(set_id: IdPath, image_id: ImageIdPath, request: Request, db: DB, who: Who, sig: SigQuery = None):
    _authorize_image(db, who, set_id, image_id, sig)
    s, img = _image(db, set_id, image_id)
    store = get_store()
    if img.thumb_sha is None or not store.path(store.rel_path(img.thumb_sha, ".png")).exists():
        try:
            data = png_bytes(load_pixels(s, img), thumb=True)
        except (OSError, ValueError) as exc:
            raise HTTPException(404, f"image {image_id} cannot be decoded: {exc}") from None
        art = store.put_bytes(db, data, "thumb", ".png")
        img.thumb_sha = art.sha256
        db.commit()
    etag = f'"{img.thumb_sha}"'
    headers = {"Cache-Control": CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(store.path(store.rel_path(img.thumb_sha, ".png")), media_type="image/png", headers=headers)


@router.get("/{set_id}/images/{image_id}/full", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the image"}},
            summary="Full image (the original file, or PNG for array data sets)")
def full(set_id: IdPath, image_id: ImageIdPath, request: Request, db: DB, who: Who, sig: SigQuery = None):
    _authorize_image(db, who, set_id, image_id, sig)
    s, img = _image(db, set_id, image_id)
    etag = '"' + hashlib.sha1(f"{s.engine_key}|{img.idx}|{img.path}".encode()).hexdigest() + '"'
    headers = {"Cache-Control": CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if s.kind == "folder" and img.path:
        p = servable_path(img.path)               # real path under an allowed root, else None
        if p is None or not p.is_file():
            raise HTTPException(404, f"image file {Path(img.path).name} is gone or outside the allowed roots")
        return FileResponse(p, media_type=mimetypes.guess_type(p.name)[0] or "application/octet-stream",
                            headers=headers)
    data = png_bytes(load_pixels(s, img), thumb=False)
    return Response(data, media_type="image/png", headers=headers)


@router.get("/{set_id}/classes", response_model=list[str], summary="Class names")
def classes(set_id: IdPath, db: DB, user: CurrentUser):
    _get_set(db, set_id)
    return classes_of(db, set_id)

