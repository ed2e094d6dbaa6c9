"""Job kind ``scan``: top-k and score matrices of layers over image sets (SPEC §1).

One ``scans`` row per image set, one ``scan_layers`` row per layer (top-k ids and scores
as JSON, the ``[N, J]`` float32 score matrix as a content-addressed ``.npy`` artifact).
A requeued scan skips the image sets it already stored.

With ``shards = S > 1`` the scan is a group (:meth:`ScanKind.members`): S ``scan_shard``
jobs (:mod:`fvaudit.jobs.kinds.scan_shard`) each scan one row range of every image set
(:func:`fvaudit.engine.scans.shards.shard_ranges`, cut on multiples of ``batch_size``) on
whichever workers are free, and write their part under ``DATA_DIR/scan-parts/``; the
scan job itself runs once all of them succeeded and merges the parts
(:func:`fvaudit.engine.scans.shards.merge_scans`): its rows and artifacts are the ones a
one-worker scan stores, bit for bit (SPEC §1 tie-break).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from fvaudit.config import Settings
from fvaudit.db.tables import ImageSet, Model, Scan, ScanLayer, User, clean_json
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, PathStr, Strict, UniqueLayers, WeightsRef
from fvaudit.jobs.validate import FieldError, check_checkpoint_path, check_layer, get_image_set, get_job, get_model


class ScanSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "image_set_ids": [1, 2], "layers": ["relu3"], "k": 10}]})
    model_id: DbId
    image_set_ids: list[DbId] = Field(min_length=1, max_length=16)
    layers: UniqueLayers = Field(min_length=1, max_length=64)
    k: int = Field(10, gt=0, le=1000)
    batch_size: int = Field(256, gt=0, le=8192)
    weights_from: WeightsRef | None = Field(None, description="scan an attack's weights instead of the model's")
    checkpoint_path: PathStr | None = Field(None, description="a checkpoint file on the server, under an allowed root")
    shards: int = Field(1, ge=1, le=64, description="split every image set into this many row ranges, scanned by "
                                                    "as many scan_shard jobs (a Celery group) and merged exactly")


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

    def members(self, spec: ScanSpec, job_id: int) -> list:
        if spec.shards <= 1:
            return []
        return [("scan_shard", ScanShardSpec(scan_job_id=job_id, shard=i, shards=spec.shards))
                for i in range(spec.shards)]

    def run(self, spec: ScanSpec, ctx) -> dict:
        return run_merge(spec, ctx) if spec.shards > 1 else run_scan(spec, ctx)


def load_scan_model(spec: ScanSpec, ctx):
    """(engine model, resolved layer names, weights label) of a scan spec, on the job's device."""
    from fvaudit.jobs.common import load_db_model, resolve_weights

    with ctx.session() as db:
        model_row = db.get(Model, spec.model_id)
        if model_row is None:
            raise RuntimeError(f"model {spec.model_id} no longer exists")
        ckpt, weights_label = resolve_weights(db, ctx.store, model_row, spec.weights_from, spec.checkpoint_path)
        db.expunge(model_row)
    ctx.reporter.stage("load model")
    model = load_db_model(model_row, ckpt, ctx.device)
    return model, [model.layer(name).name for name in spec.layers], weights_label


def pending_sets(spec: ScanSpec, ctx, out: dict[str, int]):
    """The image sets still to scan; those an earlier attempt stored go into ``out`` (a requeued scan skips them)."""
    for set_id in spec.image_set_ids:
        ctx.check_cancel()
        with ctx.session() as db:
            done = db.scalar(select(Scan.id).where(Scan.job_id == ctx.job_id, Scan.image_set_id == set_id))
        if done is not None:
            out[str(set_id)] = done
        else:
            yield set_id


def image_set_row(db: Session, set_id: int) -> ImageSet:
    row = db.get(ImageSet, set_id)
    if row is None:
        raise RuntimeError(f"image set {set_id} no longer exists")
    return row


def store_scan(ctx, spec: ScanSpec, set_id: int, set_name: str, res, weights_label: str, verb: str = "scanned") -> int:
    """One ``scans`` row and its ``scan_layers`` rows (score matrices into the artifact store)."""
    ctx.reporter.stage(f"store scan of {set_name}")
    with ctx.session() as db:
        row = Scan(job_id=ctx.job_id, model_id=spec.model_id, weights=weights_label, image_set_id=set_id,
                   k=res.k, n_images=res.n_images, n_skipped=res.n_skipped, seconds=res.seconds)
        db.add(row)
        db.flush()
        for layer, ls in res.layers.items():
            if hasattr(ls.scores, "flush"):
                ls.scores.flush()
            art = ctx.store.put_file(db, ls.path, "scores", ".npy")
            db.add(ScanLayer(scan_id=row.id, layer=layer, units=ls.units, dead_units=[int(u) for u in ls.dead_units],
                             topk_ids=ls.topk_ids.tolist(), topk_scores=clean_json(ls.topk_scores.tolist()),
                             scores_id=art.id))
        scan_id = row.id
    dead = {l: len(ls.dead_units) for l, ls in res.layers.items()}
    ctx.log(f"{verb} {res.n_images} images of {set_name} in {res.seconds:.1f} s "
            f"({res.images_per_s:.0f} images/s); dead units: {dead}")
    return scan_id


def run_scan(spec: ScanSpec, ctx) -> dict:
    from fvaudit.engine.scans.activations import scan
    from fvaudit.jobs.common import open_db_image_set

    model, layers, weights_label = load_scan_model(spec, ctx)
    out: dict[str, int] = {}
    for set_id in pending_sets(spec, ctx, out):
        with ctx.session() as db:
            set_row = image_set_row(db, set_id)
            images = open_db_image_set(db, set_row)
        k = min(spec.k, len(images))
        out_dir = ctx.work_dir / f"scan-{set_id}"
        shutil.rmtree(out_dir, ignore_errors=True)
        res = scan(model, images, layers, k=k, batch_size=spec.batch_size, device=ctx.device, out_dir=out_dir,
                   reporter=ctx.reporter)
        out[str(set_id)] = store_scan(ctx, spec, set_id, set_row.name, res, weights_label)
        del res
        shutil.rmtree(out_dir, ignore_errors=True)
    return {"scans": out, "weights": weights_label}


def run_merge(spec: ScanSpec, ctx) -> dict:
    """The fan-in of a sharded scan: every shard succeeded; merge their parts per image set."""
    from fvaudit.db.tables import Job
    from fvaudit.engine.scans.shards import merge_scans

    with ctx.session() as db:
        shards = db.scalars(select(Job).where(Job.group_job_id == ctx.job_id).order_by(Job.seq)).all()
        results = [(s.id, s.status, dict(s.result or {})) for s in shards]
    if len(results) != spec.shards or any(st != "succeeded" for _, st, _ in results):
        raise RuntimeError(f"scan job {ctx.job_id}: expected {spec.shards} succeeded shards, found "
                           + ", ".join(f"job {i} {st}" for i, st, _ in results))
    labels = {r.get("weights") for _, _, r in results}
    if len(labels) != 1:
        raise RuntimeError(f"the shards of scan job {ctx.job_id} scanned different weights: {sorted(map(str, labels))}")
    weights_label = labels.pop()
    out: dict[str, int] = {}
    for set_id in pending_sets(spec, ctx, out):
        with ctx.session() as db:
            set_row = image_set_row(db, set_id)
            set_name, n, key = set_row.name, set_row.size, set_row.engine_key
        ctx.reporter.stage(f"merge {len(results)} shards of {set_name}", total=len(results))
        parts = [load_part(ctx.settings, r["parts"][str(set_id)]) for _, _, r in results]
        out_dir = ctx.work_dir / f"scan-{set_id}"
        shutil.rmtree(out_dir, ignore_errors=True)
        res = merge_scans(parts, n, min(spec.k, n), key, out_dir=out_dir)
        out[str(set_id)] = store_scan(ctx, spec, set_id, set_name, res, weights_label,
                                      verb=f"merged {len(parts)} shards:")
        del res, parts
        shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(parts_dir(ctx.settings, ctx.job_id), ignore_errors=True)    # stored: the parts are spent
    return {"scans": out, "weights": weights_label, "shards": [i for i, _, _ in results]}


# ---------------------------------------------------------------- the shards' parts
# (the scan creates its scan_shard members and merges what they leave: the format lives here)

class ScanShardSpec(Strict):
    scan_job_id: DbId
    shard: int = Field(ge=0, le=63, description="which row range (0-based)")
    shards: int = Field(ge=2, le=64, description="how many row ranges the scan is split into")


def parts_dir(settings: Settings, scan_job_id: int) -> Path:
    """Where the shards of one scan leave their parts (on the data dir every worker shares)."""
    return settings.data_dir / "scan-parts" / f"scan-{int(scan_job_id)}"


def load_part(settings: Settings, info: dict):
    """The engine :class:`~fvaudit.engine.scans.shards.ShardPart` a shard described in its result."""
    import numpy as np

    from fvaudit.engine.scans.activations import LayerScan
    from fvaudit.engine.scans.shards import ShardPart

    d = settings.data_dir / info["dir"]
    layers = {}
    skipped: list[tuple[int, str]] = []
    if info["layers"]:
        with np.load(d / "topk.npz", allow_pickle=False) as tk:
            for i, L in enumerate(info["layers"]):
                layers[L["name"]] = LayerScan(L["name"], np.load(d / L["file"], mmap_mode="r"), tk[f"ids_{i}"],
                                              tk[f"scores_{i}"], list(L["dead_units"]))
        skipped = [(int(i), str(why)) for i, why in json.loads((d / "skipped.json").read_text())]
    return ShardPart(int(info["start"]), int(info["stop"]), layers, skipped, float(info.get("seconds", 0.0)))
