"""Image sets: registration under allowed roots, class samples, thumbnails and full images.

A folder is indexed by a ``register_images`` job (202 with the job), not inside the request:
see :mod:`fvaudit.jobs.kinds.register_images` and docs/API.md."""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated

import hashlib

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as FPath
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import and_, func, select

from fvaudit.api import manage
from fvaudit.api.deps import DB, CurrentUser, IdPath, NameQuery, Principal, Who, like, paged, unauthorized
from fvaudit.api.images import image_cache_control, load_pixels, png_bytes, servable_path
from fvaudit.registration import register_image_set, start_folder_registration
from fvaudit.api.schemas import ImageSetAccepted, ImageSetCreate, ImageSetDetail, ImageSetOut, Sample
from fvaudit.api.security import check_image_sig, parse_image_sig
from fvaudit.api.serialize import classes_of, image_urls, jobs_out, signing_key
from fvaudit.db.tables import Image, ImageSet, Job, Run, User
from fvaudit.db.session import session_scope
from fvaudit.jobs.dispatch import publish
from fvaudit.store import get_store

router = APIRouter(prefix="/image-sets", tags=["image sets"])
ImageIdPath = Annotated[int, FPath(ge=0, le=2**31 - 1, examples=[0])]


def set_out(s: ImageSet, detail: bool = False, job: Job | None = None) -> dict:
    """A set's JSON. An ``indexing`` set whose registration job ended without success (its worker
    gave up, or it failed before it could say so) reads as ``failed`` with the job's reason."""
    status, error = s.status, s.error
    if status == "indexing" and job is not None and job.status in ("failed", "cancelled"):
        status, error = "failed", error or job.error
    d = {"id": s.id, "name": s.name, "source": s.source, "kind": s.kind, "size": s.size, "limit": s.limit,
         "classes": list(s.classes or []), "status": status, "job_id": s.job_id, "error": error,
         "created_at": s.created_at, "hidden": bool(s.hidden)}
    if detail:
        d["skipped"] = list(s.skipped or [])
    return d


def _jobs_of(db, sets: list[ImageSet]) -> dict[int, Job]:
    """The registration jobs of the sets still indexing (one query)."""
    ids = [s.job_id for s in sets if s.status == "indexing" and s.job_id is not None]
    return {j.id: j for j in db.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}


def sets_out(db, sets: list[ImageSet], detail: bool = False) -> list[dict]:
    jobs = _jobs_of(db, sets)
    return [set_out(s, detail, jobs.get(s.job_id)) for s in sets]


def _get_set(db, set_id: int) -> ImageSet:
    s = db.get(ImageSet, set_id)
    if s is None:
        raise HTTPException(404, f"image set {set_id} not found")
    return s


@router.get("", response_model=list[ImageSetOut],
            summary="Registered image sets, filtered; the count of all matches in X-Total-Count")
def list_sets(db: DB, user: CurrentUser, response: Response,
              usable: Annotated[bool | None, Query(description="true: only sets a form can use (ready, not empty, "
                                                               "not hidden); false: only the others")] = None,
              include_hidden: bool = False, q: NameQuery = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
              offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    query = select(ImageSet)
    if q:
        query = query.where(func.lower(ImageSet.name).like(like(q), escape="\\"))
    ok = and_(ImageSet.status == "ready", ImageSet.size > 0, ImageSet.hidden.is_(False))
    if usable is True:
        query = query.where(ok)
    elif usable is False:
        query = query.where(~ok)
    if not include_hidden and usable is not True:
        query = query.where(ImageSet.hidden.is_(False))
    return sets_out(db, paged(db, query, (ImageSet.id,), limit, offset, response))


def _owned_set(db, user, set_id: int) -> ImageSet:
    """Image sets are listed to every user; changing one is its owner's or an admin's (403 otherwise)."""
    return manage.require_owner(user, _get_set(db, set_id), f"image set {set_id}")


manage.hide_and_delete_routes(
    router, "/{set_id}", "set_id", "set", owned=_owned_set,
    out=lambda db, s: sets_out(db, [s])[0], delete=manage.delete_image_set, response_model=ImageSetOut,
    hide_summary="Hide an image set from the lists and pickers (or show it again); owner or admin",
    delete_summary="Delete an image set nothing uses (its image index and thumbnails); owner or admin",
    conflicts="runs or jobs use it, or it is still being indexed: the detail says which; it can be hidden instead")


def _register(user_id: int, body: ImageSetCreate) -> tuple[int, int | None]:
    """(set id, registration job id or None): Fashion-MNIST inside the request, a folder as a job."""
    with session_scope() as db:
        if body.source.startswith("fashion-mnist"):
            return register_image_set(db, user_id, body.name, body.source, body.limit).id, None
        row, job, wake = start_folder_registration(db, db.get(User, user_id), body.name, body.source, body.limit)
        ids = (row.id, job.id)
    if wake:
        with session_scope() as db:
            publish(db, wake)
    return ids


@router.post("", response_model=ImageSetDetail, status_code=201,
             summary="Register an image set: fashion-mnist:train|test (201, at once) or a class-folder tree under "
                     "an allowed root (202: indexed by a register_images job)",
             responses={202: {"model": ImageSetAccepted, "description": "a folder: the set in status indexing and "
                                                                         "the job indexing it (follow its events)"},
                        422: {"description": "path outside the allowed roots, not a folder, no class subfolders"}})
async def create_set(body: ImageSetCreate, user: CurrentUser, db: DB):
    sid, jid = await run_in_threadpool(_register, user.id, body)
    row = db.get(ImageSet, sid)
    if jid is None:
        return set_out(row, detail=True)
    job = db.get(Job, jid)
    body_out = ImageSetAccepted.model_validate({**set_out(row, detail=True, job=job), "job": jobs_out(db, [job])[0]})
    return JSONResponse(jsonable_encoder(body_out), status_code=202)


@router.get("/{set_id}", response_model=ImageSetDetail, summary="One image set, with the files skipped at indexing")
def get_set(set_id: IdPath, db: DB, user: CurrentUser):
    return sets_out(db, [_get_set(db, set_id)], detail=True)[0]


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


def _authorize_image(db, who: Principal, set_id: int, image_id: int, sig: str | None) -> str:
    """Refuse the request unless a signed URL, a token or a share link allows it; return the
    ``Cache-Control`` its response may carry (:func:`fvaudit.api.images.image_cache_control`)."""
    if check_image_sig(signing_key(), set_id, image_id, sig, db):
        return image_cache_control(parse_image_sig(signing_key(), set_id, image_id, sig))
    if who.user is not None:
        return image_cache_control(None)
    if who.share is not None:
        run = db.get(Run, who.share.run_id)
        if run is not None and set_id in (run.train_set_id, run.val_set_id):
            return image_cache_control(None)
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
            summary="Thumbnail (PNG; cached briefly, never past its signed URL's expiry)")
def thumb(set_id: IdPath, image_id: ImageIdPath, request: Request, db: DB, who: Who, sig: SigQuery = None):
    cache = _authorize_image(db, who, set_id, image_id, sig)
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
    headers = {"Cache-Control": cache, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(store.path(store.rel_path(img.thumb_sha, ".png")), media_type="image/png", headers=headers)


@router.get("/{set_id}/images/{image_id}/full", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the image"}},
            summary="Full image (the original file, or PNG for array data sets)")
def full(set_id: IdPath, image_id: ImageIdPath, request: Request, db: DB, who: Who, sig: SigQuery = None):
    cache = _authorize_image(db, who, set_id, image_id, sig)
    s, img = _image(db, set_id, image_id)
    etag = '"' + hashlib.sha1(f"{s.engine_key}|{img.idx}|{img.path}".encode()).hexdigest() + '"'
    headers = {"Cache-Control": cache, "ETag": etag}
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

