"""Job kind ``scan``: top-k and score matrices of layers over image sets (SPEC §1).

One ``scans`` row per image set, one ``scan_layers`` row per layer (top-k ids and scores
as JSON, the ``[N, J]`` float32 score matrix as a content-addressed ``.npy`` artifact).
A requeued scan skips the image sets it already stored.
"""
from __future__ import annotations

import shutil

from pydantic import ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from fvaudit.db.models import ImageSet, Model, Scan, ScanLayer, User, clean_json
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, LayerName, PathStr, Strict, WeightsRef, unique_layers
from fvaudit.jobs.validate import FieldError, check_checkpoint_path, check_layer, get_image_set, get_job, get_model


class ScanSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "image_set_ids": [1, 2], "layers": ["relu3"], "k": 10}]})
    model_id: DbId
    image_set_ids: list[DbId] = Field(min_length=1, max_length=16)
    layers: list[LayerName] = Field(min_length=1, max_length=64)
    k: int = Field(10, gt=0, le=1000)
    batch_size: int = Field(256, gt=0, le=8192)
    weights_from: WeightsRef | None = Field(None, description="scan an attack's weights instead of the model's")
    checkpoint_path: PathStr | None = Field(None, description="a checkpoint file on the server, under an allowed root")

    @field_validator("layers")
    @classmethod
    def _layers_unique(cls, v):
        return unique_layers(v)


def check_scan(db: Session, user: User, spec: ScanSpec) -> ScanSpec:
    L = ("spec",)
    model = get_model(db, spec.model_id, L + ("model_id",))
    layers = [check_layer(model, name, L + ("layers", i))["name"] for i, name in enumerate(spec.layers)]
    if len(set(layers)) != len(layers):
        raise FieldError(L + ("layers",), "a layer is listed twice")
    sizes = [get_image_set(db, sid, L + ("image_set_ids", i)).size for i, sid in enumerate(spec.image_set_ids)]
    if len(set(spec.image_set_ids)) != len(spec.image_set_ids):
        raise FieldError(L + ("image_set_ids",), "an image set is listed twice")
    if spec.k > min(sizes):
        raise FieldError(L + ("k",), f"k = {spec.k} is larger than the smallest image set ({min(sizes)} images)")
    if spec.weights_from is not None and spec.checkpoint_path is not None:
        raise FieldError(L + ("checkpoint_path",), "give weights_from or checkpoint_path, not both")
    if spec.weights_from is not None:
        j = get_job(db, user, spec.weights_from.job_id, L + ("weights_from", "job_id"), ("attack",))
        if j.spec.get("model_id") != spec.model_id:
            raise FieldError(L + ("weights_from", "job_id"), f"attack job {j.id} attacked model "
                                                             f"{j.spec.get('model_id')}, not {spec.model_id}")
    update: dict = {"layers": layers}
    if spec.checkpoint_path is not None:
        update["checkpoint_path"] = check_checkpoint_path(spec.checkpoint_path, L + ("checkpoint_path",))
    return spec.model_copy(update=update)


@register_kind
class ScanKind(JobKind):
    name = "scan"
    title = "scan"
    description = "top-k and score matrices of layers over image sets (SPEC §1)"
    spec = ScanSpec

    def check(self, db, user, spec):
        return check_scan(db, user, spec)

    def depends_on(self, spec: ScanSpec) -> list[int]:
        return [spec.weights_from.job_id] if spec.weights_from else []

    def run(self, spec: ScanSpec, ctx) -> dict:
        return run_scan(spec, ctx)


def run_scan(spec: ScanSpec, ctx) -> dict:
    from fvaudit.engine.activations import scan
    from fvaudit.jobs.common import load_db_model, open_db_image_set, resolve_weights

    with ctx.session() as db:
        model_row = db.get(Model, spec.model_id)
        if model_row is None:
            raise RuntimeError(f"model {spec.model_id} no longer exists")
        ckpt, weights_label = resolve_weights(db, ctx.store, model_row,
                                              spec.weights_from,
                                              spec.checkpoint_path)
        db.expunge(model_row)
    ctx.reporter.stage("load model")
    model = load_db_model(model_row, ckpt, ctx.device)
    layers = [model.layer(name).name for name in spec.layers]
    out: dict[str, int] = {}
    for set_id in spec.image_set_ids:
        ctx.check_cancel()
        with ctx.session() as db:
            existing = db.scalar(select(Scan).where(Scan.job_id == ctx.job_id, Scan.image_set_id == set_id))
            if existing is not None:
                out[str(set_id)] = existing.id
                continue
            set_row = db.get(ImageSet, set_id)
            if set_row is None:
                raise RuntimeError(f"image set {set_id} no longer exists")
            images = open_db_image_set(db, set_row)
        k = min(spec.k, len(images))
        out_dir = ctx.work_dir / f"scan-{set_id}"
        shutil.rmtree(out_dir, ignore_errors=True)
        res = scan(model, images, layers, k=k, batch_size=spec.batch_size, device=ctx.device, out_dir=out_dir,
                   reporter=ctx.reporter)
        ctx.reporter.stage(f"store scan of {set_row.name}")
        with ctx.session() as db:
            row = Scan(job_id=ctx.job_id, model_id=spec.model_id, weights=weights_label, image_set_id=set_id,
                       k=k, n_images=res.n_images, n_skipped=res.n_skipped, seconds=res.seconds)
            db.add(row)
            db.flush()
            for layer, ls in res.layers.items():
                if hasattr(ls.scores, "flush"):
                    ls.scores.flush()
                art = ctx.store.put_file(db, ls.path, "scores", ".npy")
                db.add(ScanLayer(scan_id=row.id, layer=layer, units=ls.units, dead_units=[int(u) for u in ls.dead_units],
                                 topk_ids=ls.topk_ids.tolist(), topk_scores=clean_json(ls.topk_scores.tolist()),
                                 scores_id=art.id))
            out[str(set_id)] = row.id
        dead = {l: len(ls.dead_units) for l, ls in res.layers.items()}
        ctx.log(f"scanned {res.n_images} images of {set_row.name} in {res.seconds:.1f} s "
                f"({res.images_per_s:.0f} images/s); dead units: {dead}")
        del res
        shutil.rmtree(out_dir, ignore_errors=True)
    return {"scans": out, "weights": weights_label}
