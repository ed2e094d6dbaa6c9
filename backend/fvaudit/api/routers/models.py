"""Models: registry, registration (registry name or uploaded checkpoint), layers."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Path as FPath, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select

from fvaudit.api import manage
from fvaudit.api.deps import DB, CurrentUser, IdPath, NameQuery, Who, like, paged, require_user
from fvaudit.registration import register_model
from fvaudit.api.schemas import (LayerOut, ModelCreate, ModelOut, ModelSynthetic, ModelSyntheticUnitDetail,
                                 RegistryEntry)
from fvaudit.api.serialize import synthetic_url
from fvaudit.config import get_settings
from fvaudit.db.tables import Model, Run, SyntheticImage
from fvaudit.db.session import session_scope
from fvaudit.jobs.validate import FieldError, check_checkpoint_path

router = APIRouter(prefix="/models", tags=["models"])
UPLOAD_SUFFIXES = (".safetensors", ".pt", ".pth")


def model_out(m: Model, status: tuple[str, str | None] = ("ready", None), usage: dict | None = None) -> dict:
    return {"id": m.id, "name": m.name, "registry_name": m.registry_name, "source": m.source, "weights": m.weights,
            "pretrained": m.pretrained, "input_shape": list(m.input_shape or []),
            "n_classes": len(m.class_names or []), "n_layers": len(m.layers or []), "created_at": m.created_at,
            "parent_model_id": m.parent_model_id, "prune_job_id": m.prune_job_id, "prune": m.prune,
            "status": status[0], "status_reason": status[1], "hidden": bool(m.hidden),
            "usage": usage or {"runs": 0, "models": 0, "jobs": 0}}


def models_out(db, models: list[Model]) -> list[dict]:
    """Models with their status and what derives from them (a few grouped queries for the page)."""
    status = manage.model_status(db, models)
    usage = manage.model_usage(db, [m.id for m in models])
    return [model_out(m, status[m.id], usage[m.id]) for m in models]


def _ready():
    """SQL condition of a ready model: it has weights, or it is not a pruned model waiting for them."""
    return (Model.checkpoint_id.is_not(None)) | (Model.prune_job_id.is_(None) & (Model.source != "pruned"))


@router.get("/registry", response_model=list[RegistryEntry], summary="Models that can be registered by name")
def registry(who: Who):
    require_user(who)
    from fvaudit.engine.models.sources import list_models

    return list_models()


@router.get("", response_model=list[ModelOut],
            summary="Registered models, filtered; the count of all matches in X-Total-Count")
def list_models(db: DB, user: CurrentUser, response: Response,
                usable: Annotated[bool | None, Query(description="true: only models a form can use (ready, not "
                                                                 "hidden); false: only the others")] = None,
                include_hidden: bool = False, q: NameQuery = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    query = select(Model)
    if q:
        query = query.where(func.lower(Model.name).like(like(q), escape="\\"))
    if usable is True:
        query = query.where(_ready(), Model.hidden.is_(False))
    elif usable is False:
        query = query.where(~_ready() | Model.hidden.is_(True))
        if not include_hidden:
            query = query.where(Model.hidden.is_(False))
    elif not include_hidden:
        query = query.where(Model.hidden.is_(False))
    return models_out(db, paged(db, query, (Model.id,), limit, offset, response))


def _register(user_id: int, body: ModelCreate) -> int:
    ckpt = None
    if body.checkpoint_path is not None:
        ckpt = Path(check_checkpoint_path(body.checkpoint_path, ("body", "checkpoint_path")))
    with session_scope() as db:
        m = register_model(db, user_id, body.name, body.registry_name, body.pretrained, ckpt,
                           source="path" if ckpt else "registry", checkpoint_field=("body", "checkpoint_path"))
        return m.id


@router.post("", response_model=ModelOut, status_code=201,
             summary="Register a model by registry name (weights resolved on the server)",
             responses={422: {"description": "unknown model, weights unavailable, or a checkpoint that does not fit"}})
async def create_model(body: ModelCreate, user: CurrentUser, db: DB):
    mid = await run_in_threadpool(_register, user.id, body)
    return models_out(db, [db.get(Model, mid)])[0]


def _register_upload(user_id: int, name: str, registry_name: str, tmp: Path, original: str) -> int:
    with session_scope() as db:
        m = register_model(db, user_id, name, registry_name, False, tmp, source="upload",
                           checkpoint_field=("body", "file"), original_name=original)
        return m.id


@router.post("/upload", response_model=ModelOut, status_code=201,
             summary="Register a model from an uploaded checkpoint (.safetensors or weights-only .pt)",
             responses={413: {"description": "file larger than FVAUDIT_MAX_UPLOAD_MB"},
                        422: {"description": "unknown architecture, or a checkpoint that is refused "
                                             "(pickled objects, wrong shapes)"}})
async def upload_model(user: CurrentUser, db: DB,
                       file: Annotated[UploadFile, File(description=".safetensors, or a weights-only .pt / .pth")],
                       registry_name: Annotated[str, Form(min_length=1, max_length=200, description="architecture")],
                       name: Annotated[str, Form(min_length=1, max_length=200)]):
    for field, v in (("registry_name", registry_name), ("name", name)):
        if "\x00" in v:
            raise FieldError(("body", field), "must not contain NUL characters")
    original = Path(file.filename or "").name
    suffix = Path(original).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise FieldError(("body", "file"), f"unsupported checkpoint type {suffix or '(none)'!r}: "
                                           "upload .safetensors, or a weights-only .pt / .pth")
    settings = get_settings()
    limit = settings.max_upload_mb * 2**20
    tmp_dir = Path(tempfile.mkdtemp(dir=_tmp_root()))
    try:
        tmp = tmp_dir / f"upload{suffix}"
        size = 0
        with open(tmp, "wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"checkpoint larger than {settings.max_upload_mb} MiB")
                out.write(chunk)
        if size == 0:
            raise FieldError(("body", "file"), "empty file")
        mid = await run_in_threadpool(_register_upload, user.id, name, registry_name, tmp, original)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return models_out(db, [db.get(Model, mid)])[0]


def _tmp_root() -> Path:
    d = get_settings().data_dir / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    return d


@router.get("/{model_id}", response_model=ModelOut, summary="One model")
def get_model(model_id: IdPath, db: DB, user: CurrentUser):
    m = db.get(Model, model_id)
    if m is None:
        raise HTTPException(404, f"model {model_id} not found")
    return models_out(db, [m])[0]


def _owned_model(db, user, model_id: int) -> Model:
    """Models are listed to every user; changing one is its owner's or an admin's (403 otherwise)."""
    return manage.require_owner(user, _model_or_404(db, model_id), f"model {model_id}")


manage.hide_and_delete_routes(
    router, "/{model_id}", "model_id", "model", owned=_owned_model,
    out=lambda db, m: models_out(db, [m])[0], delete=manage.delete_model, response_model=ModelOut,
    hide_summary="Hide a model from the lists and pickers (or show it again); owner or admin",
    delete_summary="Delete a model nothing derives from, with its checkpoint; owner or admin",
    conflicts="something derives from it (runs, pruned models, jobs): the detail says what; it can be hidden instead")


@router.get("/{model_id}/layers", response_model=list[LayerOut], summary="Addressable layers, with shapes and unit counts")
def layers(model_id: IdPath, db: DB, user: CurrentUser):
    m = db.get(Model, model_id)
    if m is None:
        raise HTTPException(404, f"model {model_id} not found")
    return m.layers



def _visible(q, user):
    """Images of a visualize job run alone are everyone's; those of a run stay its owner's."""
    if user.is_admin:
        return q
    return q.outerjoin(Run, Run.id == SyntheticImage.run_id).where(
        (SyntheticImage.run_id.is_(None)) | (Run.owner_id == user.id))


def _model_or_404(db, model_id: int) -> Model:
    m = db.get(Model, model_id)
    if m is None:
        raise HTTPException(404, f"model {model_id} not found")
    return m


@router.get("/{model_id}/synthetic", response_model=ModelSynthetic, tags=["synthetic"],
            summary="A model's synthetic visualizations: one image per unit (first seed of the newest visualize job "
                    "of each layer, θ_init)")
def model_synthetic(model_id: IdPath, db: DB, user: CurrentUser):
    _model_or_404(db, model_id)
    q = _visible(select(SyntheticImage.layer, func.max(SyntheticImage.job_id)), user)
    newest = dict(db.execute(q.where(SyntheticImage.model_id == model_id, SyntheticImage.state == "init")
                             .group_by(SyntheticImage.layer)).all())
    layers = []
    for layer in sorted(newest):
        job_id = newest[layer]
        first = db.scalar(select(func.min(SyntheticImage.seed)).where(SyntheticImage.job_id == job_id,
                                                                      SyntheticImage.layer == layer))
        rows = db.execute(select(SyntheticImage.id, SyntheticImage.unit, SyntheticImage.seed)
                          .where(SyntheticImage.job_id == job_id, SyntheticImage.layer == layer,
                                 SyntheticImage.state == "init", SyntheticImage.seed == first)
                          .order_by(SyntheticImage.unit)).all()
        layers.append({"layer": layer, "units": [{"unit": r.unit, "url": synthetic_url(r.id), "seed": r.seed,
                                                  "job_id": job_id} for r in rows]})
    return {"model_id": model_id, "layers": layers}


@router.get("/{model_id}/synthetic/{layer}/{unit}", response_model=ModelSyntheticUnitDetail, tags=["synthetic"],
            summary="Every stored synthetic visualization of one unit of a model (all seeds, states and jobs)")
def model_synthetic_unit(model_id: IdPath, layer: Annotated[str, FPath(min_length=1, max_length=300,
                                                                       pattern=r"^[^\x00/]+$")],
                         unit: Annotated[int, FPath(ge=0, le=2**31 - 1)], db: DB, user: CurrentUser):
    _model_or_404(db, model_id)
    q = _visible(select(SyntheticImage), user).where(SyntheticImage.model_id == model_id,
                                                     SyntheticImage.layer == layer, SyntheticImage.unit == unit)
    rows = db.scalars(q.order_by(SyntheticImage.job_id.desc(), SyntheticImage.state, SyntheticImage.seed)).all()
    if not rows:
        raise HTTPException(404, f"no synthetic visualization of {layer}/{unit} for model {model_id}")
    return {"model_id": model_id, "layer": layer, "unit": unit,
            "images": [{"url": synthetic_url(r.id), "seed": r.seed, "objective": r.objective, "steps": r.steps,
                        "size": r.size, "job_id": r.job_id, "state": r.state} for r in rows]}
