"""Job kind ``register_images`` (internal): index a folder image set, with progress.

Registering ImageNet's training folder means listing 1.28M files and opening every one
to check its header: about half an hour, far too long for an HTTP request. ``POST
/image-sets`` with a folder therefore does only the cheap checks (allowed root, a
directory with class subfolders), writes the ``image_sets`` row in status ``indexing``
and creates this job (:func:`fvaudit.registration.start_folder_registration`). The
job, on a worker:

1. ``index files``: lists class folders and image files in the engine's id order
   (:class:`~fvaudit.engine.data.images.FolderImageSet` without header checks; symlinks
   leaving the allowed roots are skipped unopened, with the reason);
2. ``check headers``: ``Image.verify()`` on every file, in threads, in chunks (progress
   and the cancel flag between chunks); a corrupt file is skipped with its reason, as at
   indexing before;
3. ``store rows``: one ``images`` row per kept image (stable id, path, label) and the
   set's size, classes, skipped files and engine key, in one transaction: a requeued job
   starts again from nothing, a failed one leaves no half-written set.

Ids equal the ones the synchronous indexing gave (sorted class folder, then sorted file;
unreadable files take no id); a ``limit`` keeps the engine's seeded, class-stratified sample
of the readable files (:func:`~fvaudit.engine.data.images.stratified_ids`), as ``open_image_set`` does. A failure (no class folder, no readable image, cancel)
marks the set ``failed`` with the reason; a set whose job ended otherwise (its worker
gave up) reads as failed through its job (:mod:`fvaudit.api.routers.image_sets`).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from fvaudit.db.tables import Image, ImageSet, clean_json
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, Strict

#: files per header-check chunk (progress and cancel are looked at between chunks)
CHECK_CHUNK = 512
#: image rows per INSERT
ROW_CHUNK = 5000


class RegisterImagesSpec(Strict):
    image_set_id: DbId


def folder_digest(paths: list[Path]) -> str:
    """A digest of the indexed files (path, size, mtime): part of the engine key, so a changed
    folder registered again gets another key (and other decode-cache entries)."""
    h = hashlib.sha1()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:12]


def index_folder(root: Path, allowed_roots: list[Path], limit: int | None, reporter=None,
                 check_cancel: Callable[[], None] = lambda: None, threads: int | None = None) -> dict:
    """List and check a class-folder tree; returns what the set's rows need.

    ``{"paths", "labels", "classes", "skipped": [{path, reason}], "key"}``; raises
    :class:`~fvaudit.engine.data.images.ImageSetError` when nothing usable is left.
    """
    from fvaudit.engine.data.images import FolderImageSet, ImageSetError, _verify_header, stratified_ids, subset
    from fvaudit.engine.progress import NullReporter

    reporter = reporter or NullReporter()
    reporter.stage("index files")
    listed = FolderImageSet(root, cache=None, verify=False, allowed_roots=allowed_roots)
    skipped = [{"path": s.path, "reason": s.reason} for s in listed.skipped]
    n = len(listed.paths)
    reporter.stage("check headers", total=n)
    keep: list[int] = []
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, n, CHECK_CHUNK):
            check_cancel()
            chunk = listed.paths[start:start + CHECK_CHUNK]
            for i, reason in enumerate(pool.map(_verify_header, chunk), start=start):
                if reason:
                    skipped.append({"path": str(listed.paths[i]), "reason": reason})
                else:
                    keep.append(i)
            reporter.advance(min(n, start + CHECK_CHUNK), n)
    if not keep:
        raise ImageSetError(f"image folder {root} holds no readable images ({len(skipped)} unreadable files skipped)")
    paths = [listed.paths[i] for i in keep]
    labels = listed.labels[keep]
    key = f"folder:{listed.root}"
    if limit:       # the engine's rule of a limited set: a seeded, class-stratified sample
        ds = subset(FolderImageSet.from_index(key, listed.class_names, paths, labels), stratified_ids(labels, limit))
        paths = [paths[int(i)] for i in ds.parent_ids]
        labels = labels[ds.parent_ids]
        key = ds.key
    return {"paths": paths, "labels": [int(v) for v in labels], "classes": list(listed.class_names),
            "skipped": skipped, "key": f"{key}@{folder_digest(paths)}"}


def fill_folder_set(db: Session, row: ImageSet, index: dict) -> None:
    """Write the indexed images of a folder set and mark it ready (inside the caller's transaction;
    nothing reports from inside it: on SQLite a progress write would wait for this very transaction)."""
    n = len(index["paths"])
    db.execute(delete(Image).where(Image.image_set_id == row.id))
    for start in range(0, n, ROW_CHUNK):
        db.execute(insert(Image), [{"image_set_id": row.id, "idx": i, "path": str(index["paths"][i]),
                                    "label": index["labels"][i]} for i in range(start, min(n, start + ROW_CHUNK))])
    row.size = n
    row.classes = list(index["classes"])
    row.skipped = clean_json(index["skipped"])
    row.engine_key = index["key"]
    row.status = "ready"
    row.error = None


@register_kind
class RegisterImagesKind(JobKind):
    name = "register_images"
    title = "register image folder"
    description = "index a folder image set: list the files, check every header, store one row per image"
    spec = RegisterImagesSpec
    internal = True
    quick = True   # I/O-bound indexing, no model: the embedded quick lane takes it at once, beside a long job

    def run(self, spec: RegisterImagesSpec, ctx) -> dict:
        from fvaudit.engine.progress import Cancelled
        from fvaudit.jobs.context import LeaseLost
        from fvaudit.sanitize import clean_reason

        try:
            return run_register(spec, ctx)
        except LeaseLost:
            raise
        except Exception as exc:
            why = "cancelled on request" if isinstance(exc, Cancelled) else f"{type(exc).__name__}: {exc}"
            with ctx.session() as db:
                row = db.get(ImageSet, spec.image_set_id)
                if row is not None and row.status != "ready":
                    row.status = "failed"
                    row.error = clean_reason(why)
            raise


def run_register(spec: RegisterImagesSpec, ctx) -> dict:
    with ctx.session() as db:
        row = db.get(ImageSet, spec.image_set_id)
        if row is None:
            raise RuntimeError(f"image set {spec.image_set_id} no longer exists")
        if row.kind != "folder" or not row.root_path:
            raise RuntimeError(f"image set {row.id} is not a folder set")
        root, limit = Path(row.root_path), row.limit
    index = index_folder(root, ctx.settings.roots, limit, ctx.reporter, ctx.check_cancel)
    ctx.check_cancel()
    n = len(index["paths"])
    ctx.reporter.stage("store rows", total=n)
    with ctx.session() as db:
        row = db.get(ImageSet, spec.image_set_id)
        if row is None:
            raise RuntimeError(f"image set {spec.image_set_id} no longer exists")
        fill_folder_set(db, row, index)
    ctx.reporter.advance(n, n)
    ctx.log(f"indexed {len(index['paths'])} images in {len(index['classes'])} classes; "
            f"{len(index['skipped'])} files skipped")
    return {"size": len(index["paths"]), "classes": len(index["classes"]), "n_skipped": len(index["skipped"])}
