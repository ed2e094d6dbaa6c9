"""Job kind ``scan_shard`` (internal): one row range of a sharded scan (SPEC §1).

A scan with ``shards = S > 1`` is created with S members of this kind
(``group_job_id`` = the scan job; :meth:`fvaudit.jobs.kinds.scan.ScanKind.members`),
published together as one Celery group. Member ``i`` reads the scan job's spec, scans
the ids ``shard_ranges(N, S, batch_size)[i]`` of every image set and leaves its part in
``DATA_DIR/scan-parts/scan-<scan job>/shard-<i>/set-<id>/``: the rows of each score
matrix (``scores_<layer>.npy``), the part's top-k (``topk.npz``, exact float32) and the
ids and reasons of images that failed to decode (``skipped.json``). Its ``result`` says
where (no reasons there: they may name server paths). The scan job merges the parts
once every member succeeded and removes them; a requeued shard rewrites its own part; a
shard that fails fails the scan (:mod:`fvaudit.jobs.lifecycle`), and the reaper removes the
parts of a scan that ended once none of its shards is still writing (:meth:`ScanShardKind.reap`).
"""
from __future__ import annotations

import json
import shutil


from fvaudit.db.tables import Job
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.kinds.scan import ScanShardSpec, ScanSpec, image_set_row, load_scan_model, parts_dir


@register_kind
class ScanShardKind(JobKind):
    name = "scan_shard"
    title = "scan shard"
    description = "one row range of a sharded scan (created by a scan with shards > 1)"
    spec = ScanShardSpec
    internal = True

    def run(self, spec: ScanShardSpec, ctx) -> dict:
        return run_shard(spec, ctx)

    def reap(self, db, settings) -> list[str]:
        """Parts of scans that ended (failed, cancelled, or merged by a run that died before its
        own cleanup) whose shards have all stopped writing: nothing will read them again."""
        from sqlalchemy import select

        from fvaudit.db.tables import TERMINAL

        root = settings.data_dir / "scan-parts"
        if not root.is_dir():
            return []
        removed = []
        for d in root.iterdir():
            sid = d.name.removeprefix("scan-")
            if not (d.name.startswith("scan-") and sid.isdigit()):
                continue
            scan = db.get(Job, int(sid))
            busy = db.scalar(select(Job.id).where(Job.group_job_id == int(sid), Job.status.not_in(TERMINAL)).limit(1))
            if (scan is None or scan.status in TERMINAL) and busy is None:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        return removed


def run_shard(spec: ScanShardSpec, ctx) -> dict:
    import numpy as np

    from fvaudit.engine.scans.shards import scan_shard, shard_ranges
    from fvaudit.jobs.common import open_db_image_set

    with ctx.session() as db:
        scan_job = db.get(Job, spec.scan_job_id)
        if scan_job is None:
            raise RuntimeError(f"scan job {spec.scan_job_id} no longer exists")
        scan_spec = ScanSpec.model_validate(scan_job.spec)
    if scan_spec.shards != spec.shards:
        raise RuntimeError(f"scan job {spec.scan_job_id} has {scan_spec.shards} shards, not {spec.shards}")
    model, layers, weights_label = load_scan_model(scan_spec, ctx)
    parts: dict[str, dict] = {}
    for set_id in scan_spec.image_set_ids:
        ctx.check_cancel()
        with ctx.session() as db:
            set_row = image_set_row(db, set_id)
            images = open_db_image_set(db, set_row)
        start, stop = shard_ranges(len(images), spec.shards, scan_spec.batch_size)[spec.shard]
        d = parts_dir(ctx.settings, spec.scan_job_id) / f"shard-{spec.shard}" / f"set-{set_id}"
        shutil.rmtree(d, ignore_errors=True)        # a requeued shard starts its part again
        d.mkdir(parents=True)
        info: dict = {"start": start, "stop": stop, "dir": str(d.relative_to(ctx.settings.data_dir)), "layers": [],
                      "n_skipped": 0, "seconds": 0.0}
        if stop > start:
            res = scan_shard(model, images, layers, scan_spec.k, start, stop, batch_size=scan_spec.batch_size,
                             device=ctx.device, out_dir=d, reporter=ctx.reporter)
            for ls in res.layers.values():
                if hasattr(ls.scores, "flush"):
                    ls.scores.flush()
            np.savez(d / "topk.npz", **{f"{what}_{i}": arr for i, ls in enumerate(res.layers.values())
                                        for what, arr in (("ids", ls.topk_ids), ("scores", ls.topk_scores))})
            (d / "skipped.json").write_text(json.dumps([[int(i), why] for i, why in res.skipped]))
            info.update(layers=[{"name": name, "units": ls.units, "dead_units": [int(u) for u in ls.dead_units],
                                 "file": ls.path.name} for name, ls in res.layers.items()],
                        n_skipped=len(res.skipped), seconds=res.seconds)
            ctx.log(f"shard {spec.shard + 1} of {spec.shards}: images {start}..{stop - 1} of {set_row.name} in "
                    f"{res.seconds:.1f} s ({res.images_per_s:.0f} images/s), {len(res.skipped)} unreadable")
            del res
        else:
            ctx.log(f"shard {spec.shard + 1} of {spec.shards}: no rows of {set_row.name} "
                    f"({len(images)} images, batch {scan_spec.batch_size})")
        parts[str(set_id)] = info
    return {"parts": parts, "weights": weights_label}
