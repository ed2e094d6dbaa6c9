"""Job kind ``scan``: top-k and score matrices of layers over image sets (SPEC §1).

One ``scans`` row per image set, one ``scan_layers`` row per layer (top-k ids and scores
as JSON, the ``[N, J]`` float32 score matrix as a content-addressed ``.npy`` artifact).
A requeued scan skips the image sets it already stored.
"""
from __future__ import annotations

import shutil

from sqlalchemy import select

from fvaudit.db.models import ImageSet, Model, Scan, ScanLayer, clean_json
from fvaudit.jobs.common import load_db_model, open_db_image_set, resolve_weights
from fvaudit.jobs.context import JobContext
from fvaudit.jobs.specs import ScanSpec


def run(spec: ScanSpec, ctx: JobContext) -> dict:
    from fvaudit.engine.activations import scan

    with ctx.session() as db:
        model_row = db.get(Model, spec.model_id)
        if model_row is None:
            raise RuntimeError(f"model {spec.model_id} no longer exists")
        ckpt, weights_label = resolve_weights(db, ctx.store, model_row,
                                              spec.weights_from.model_dump() if spec.weights_from else None,
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
