"""Register models and image sets (API and CLI share these).

Models: the engine builds the model once at registration, which checks the name, the
weights and a checkpoint's fit, and yields the layer list that is cached in the row
(request-time layer/unit checks then need no torch). Uploaded checkpoints are read
without executing code (safetensors, or a pickle screened opcode by opcode and then
``torch.load(weights_only=True)``) and stored re-saved as safetensors.

Image sets: ``fashion-mnist:train|test`` (registered inside the request) or a folder under
an allowed root (the request checks the path and creates a ``register_images`` job that
lists the files and checks every header, with progress); every image gets a row
(stable id, path, label) at registration.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

from fvaudit.config import get_settings
from fvaudit.db.tables import Image, ImageSet, Job, Model, User, clean_json
from fvaudit.db.session import inserted
from fvaudit.jobs.validate import FieldError
from fvaudit.store import get_store

FASHION_SOURCES = ("fashion-mnist:train", "fashion-mnist:test")


def register_model(db: Session, owner_id: int | None, name: str, registry_name: str, pretrained: bool = True,
                   checkpoint: Path | None = None, source: str = "registry", checkpoint_field: tuple = ("body", "file"),
                   original_name: str | None = None) -> Model:
    from fvaudit.engine.models.checkpoints import (UnsafeCheckpoint, apply_checkpoint, save_checkpoint,
                                                   screen_pickle_checkpoint)
    from fvaudit.engine.models.loaded import ModelError
    from fvaudit.engine.models.sources import load_model

    try:
        lm = load_model(registry_name, pretrained=pretrained and checkpoint is None)
    except ModelError as exc:
        raise FieldError(("body", "registry_name"), str(exc)) from None
    except Exception as exc:  # torchvision raises assorted errors for odd names
        raise FieldError(("body", "registry_name"), f"cannot build model {registry_name!r}: "
                                                    f"{type(exc).__name__}: {exc}") from None
    store = get_store()
    art = None
    weights = lm.weights
    if checkpoint is not None:
        try:
            if checkpoint.suffix != ".safetensors":
                screen_pickle_checkpoint(checkpoint)
            # messages name the upload, not its temp path
            if apply_checkpoint(lm.module, checkpoint, original_name):
                lm.refresh_layers()   # a structurally pruned checkpoint resized modules: the widths changed
        except (ModelError, UnsafeCheckpoint) as exc:
            raise FieldError(checkpoint_field, f"checkpoint refused: {exc}") from None
        with tempfile.TemporaryDirectory(dir=get_settings().data_dir) as td:
            # metadata names only the architecture: equal weights → equal bytes → one artifact
            out = save_checkpoint(lm.module, Path(td) / "weights.safetensors", {"registry_name": registry_name})
            art = store.put_file(db, out, "checkpoint", ".safetensors")
        weights = f"checkpoint:{original_name or checkpoint.name} (sha256 {art.sha256[:12]})"
    m = Model(name=name, registry_name=registry_name, source=source, weights=weights,
              pretrained=bool(pretrained and checkpoint is None), checkpoint_id=art.id if art else None,
              layers=clean_json([l.as_dict() for l in lm.layers]), class_names=list(lm.class_names),
              input_shape=list(lm.input_shape), owner_id=owner_id)
    return inserted(db, m)


def _check_folder(source: str) -> Path:
    """The request-time checks of a folder source (cheap: no file is opened); returns its real path."""
    settings = get_settings()
    loc = ("body", "source")
    p = settings.is_allowed_path(source)
    if p is None:
        raise FieldError(loc, f"path {source!r} is outside the allowed roots ("
                              + ", ".join(map(str, settings.roots)) + ")")
    if not p.is_dir():
        raise FieldError(loc, f"{source!r} is not a directory")
    try:
        has_class = any(d.is_dir() and not d.name.startswith(".") for d in p.iterdir())
    except OSError as exc:
        raise FieldError(loc, f"{source!r} cannot be listed: {type(exc).__name__}") from None
    if not has_class:
        raise FieldError(loc, f"image folder {source!r} has no class subfolders (expected root/<class>/<image>)")
    return p


def _folder_row(name: str, p: Path, limit: int | None, owner_id: int | None, status: str) -> ImageSet:
    return ImageSet(name=name, source=str(p), kind="folder", root_path=str(p), limit=limit, size=0, classes=[],
                    skipped=[], engine_key=f"folder:{p}", owner_id=owner_id, status=status)


def start_folder_registration(db: Session, user: User, name: str, source: str, limit: int | None
                              ) -> tuple[ImageSet, Job, list[int]]:
    """A folder set in status ``indexing`` and its ``register_images`` job (the work runs on a worker).

    Returns (set row, job row, ids to publish once the transaction committed).
    """
    from fvaudit.jobs.create import create_job
    from fvaudit.jobs.kinds.register_images import RegisterImagesSpec

    p = _check_folder(source)
    row = _folder_row(name, p, limit, user.id, "indexing")
    db.add(row)
    db.flush()
    job, wake = create_job(db, user, "register_images", RegisterImagesSpec(image_set_id=row.id))
    row.job_id = job.id
    db.flush()
    return row, job, wake


def register_image_set(db: Session, owner_id: int | None, name: str, source: str, limit: int | None) -> ImageSet:
    """Register an image set inside this transaction: Fashion-MNIST (what the API does), or a folder
    indexed synchronously (scripts; the API indexes folders with a job: :func:`start_folder_registration`)."""
    from fvaudit.engine.data.images import ImageSetError, open_image_set

    import numpy as np

    settings = get_settings()
    loc = ("body", "source")
    if not source.startswith("fashion-mnist"):
        from fvaudit.jobs.kinds.register_images import fill_folder_set, index_folder

        p = _check_folder(source)
        try:
            index = index_folder(p, settings.roots, limit)
        except ImageSetError as exc:
            raise FieldError(loc, str(exc)) from None
        row = _folder_row(name, p, limit, owner_id, "ready")
        db.add(row)
        db.flush()
        fill_folder_set(db, row, index)
        return row
    if source not in FASHION_SOURCES:
        raise FieldError(loc, f"unknown built-in image set {source!r}; use " + " or ".join(FASHION_SOURCES))
    try:
        ds = open_image_set(source, cache_dir=settings.engine_cache_dir, limit=limit)
    except ImageSetError as exc:
        raise FieldError(loc, str(exc)) from None
    row = ImageSet(name=name, source=source, kind="fashion-mnist", root_path=None, limit=limit, size=len(ds),
                   classes=list(ds.class_names), skipped=[], engine_key=ds.key, owner_id=owner_id, status="ready")
    db.add(row)
    db.flush()
    labels = np.asarray(ds.labels, dtype=np.int64)
    rows = [{"image_set_id": row.id, "idx": i, "path": None, "label": int(labels[i])} for i in range(len(ds))]
    for start in range(0, len(rows), 5000):
        db.execute(insert(Image), rows[start:start + 5000])
    return row
