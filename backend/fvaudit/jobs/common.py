"""Worker-side helpers: DB rows → engine objects (models, image sets, scans)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from fvaudit.config import get_settings
from fvaudit.db.tables import Image, ImageSet, Job, Model, Scan
from fvaudit.engine.data.images import DecodeCache, FolderImageSet, ImageSet as EngineImageSet, reopen_image_set
from fvaudit.jobs.specs import WeightsRef
from fvaudit.store import ArtifactStore


def configure_pipeline() -> None:
    """The worker's settings become the engine input pipeline's defaults (workers, decode-cache
    use, the skipped-share threshold, AMP): every job kind loads images through it."""
    from fvaudit.engine.data import pipeline

    s = get_settings()
    pipeline.configure(workers=s.loader_workers, cache=s.decode_cache, max_skipped_share=s.scan_max_skipped_share,
                       amp=s.amp)


def open_db_image_set(db: Session, row: ImageSet) -> EngineImageSet:
    configure_pipeline()
    cache_dir = get_settings().engine_cache_dir
    if row.kind == "fashion-mnist":
        return reopen_image_set(row.source, row.limit, row.engine_key, cache_dir)
    rows = db.execute(select(Image.idx, Image.path, Image.label).where(Image.image_set_id == row.id)
                      .order_by(Image.idx)).all()
    # the set exactly as indexed at registration: files added or removed later do not shift ids
    # allowed_roots: a file swapped for a symlink out of the roots after indexing is skipped here too
    return FolderImageSet.from_index(row.engine_key, row.classes, [r.path for r in rows],
                                     [r.label for r in rows],
                                     DecodeCache(cache_dir / "decoded", get_settings().decode_cache_bytes),
                                     allowed_roots=get_settings().roots)


def model_checkpoint(store: ArtifactStore, model: Model) -> Path | None:
    return store.path(model.checkpoint) if model.checkpoint is not None else None


def resolve_weights(db: Session, store: ArtifactStore, model: Model, weights_from: "WeightsRef | None",
                    checkpoint_path: str | None) -> tuple[Path | None, str]:
    """(checkpoint file or None for the model's own weights, a label for the scan row)."""
    if weights_from is not None:
        job = db.get(Job, weights_from.job_id)
        if job is None or job.status != "succeeded":
            raise RuntimeError(f"attack job {weights_from.job_id} has not succeeded "
                               f"({job.status if job else 'missing'}); its weights are not available")
        sha = (job.result or {}).get(f"{weights_from.state}_sha")
        if not sha:
            raise RuntimeError(f"attack job {job.id} recorded no {weights_from.state} weights")
        from fvaudit.db.tables import Artifact

        art = db.scalar(select(Artifact).where(Artifact.sha256 == sha))
        if art is None:
            raise RuntimeError(f"artifact {sha} of attack job {job.id} is missing")
        return store.path(art), f"artifact:{sha}"
    if checkpoint_path:
        settings = get_settings()
        p = settings.is_allowed_path(checkpoint_path)
        if p is None:
            raise RuntimeError(f"checkpoint path {checkpoint_path} is outside the allowed roots")
        return p, f"path:{p}"
    ck = model_checkpoint(store, model)
    return ck, (f"artifact:{model.checkpoint.sha256}" if ck is not None else "model")


def load_db_model(model: Model, checkpoint: Path | None, device: str):
    """The engine model of a row; a pruned model (SPEC §5) gets its masks back from its zeros,
    so its pruned weights stay zero through any fine-tune or attack that follows."""
    from fvaudit.engine.models.sources import load_model

    if model.prune_job_id is not None and model.checkpoint_id is None:
        raise RuntimeError(f"model {model.id} has no weights yet: its prune job {model.prune_job_id} has not "
                           "succeeded")
    lm = load_model(model.registry_name, checkpoint=checkpoint, pretrained=model.pretrained, device=device)
    if model.prune is not None:
        from fvaudit.engine.defence.masks import attach_masks, masks_from_zeros

        attach_masks(lm, masks_from_zeros(lm))
    return lm


def load_scan(db: Session, job_id: int, image_set_id: int) -> Scan:
    job = db.get(Job, job_id)
    if job is None or job.status != "succeeded":
        raise RuntimeError(f"scan job {job_id} has not succeeded ({job.status if job else 'missing'})")
    scan = db.scalar(select(Scan).where(Scan.job_id == job_id, Scan.image_set_id == image_set_id))
    if scan is None:
        raise RuntimeError(f"scan job {job_id} holds no scan of image set {image_set_id}")
    return scan


def layer_scan(store: ArtifactStore, scan: Scan, layer: str):
    """An engine LayerScan from a stored scan (score matrix memory-mapped from the store)."""
    from fvaudit.engine.scans.activations import LayerScan

    for sl in scan.layers:
        if sl.layer == layer:
            scores = np.load(store.path(sl.scores), mmap_mode="r")
            return LayerScan(layer, scores, np.asarray(sl.topk_ids, dtype=np.int64),
                             np.asarray(sl.topk_scores, dtype=np.float32), list(sl.dead_units))
    raise RuntimeError(f"scan {scan.id} has no layer {layer}")
