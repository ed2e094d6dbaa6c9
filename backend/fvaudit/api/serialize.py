"""Rows → API JSON."""
from __future__ import annotations

import threading
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from fvaudit.api.security import image_sig_expiry, sign_image
from fvaudit.config import get_settings
from fvaudit.db.models import METRICS, ImageSet, Job, Run, UnitResult

API = "/api/v1"

_classes_lock = threading.Lock()
_classes: dict[int, list[str]] = {}
_key: bytes | None = None


def signing_key() -> bytes:
    global _key
    if _key is None:
        _key = get_settings().signing_key()
    return _key


def reset_caches() -> None:
    global _key
    _key = None
    with _classes_lock:
        _classes.clear()


def classes_of(db: Session, image_set_id: int) -> list[str]:
    """Class names of an image set (rows are immutable: cached per process)."""
    with _classes_lock:
        hit = _classes.get(image_set_id)
    if hit is not None:
        return hit
    classes = db.scalar(select(ImageSet.classes).where(ImageSet.id == image_set_id)) or []
    with _classes_lock:
        _classes[image_set_id] = list(classes)
    return list(classes)


def image_urls(image_set_id: int, image_id: int, share_id: int | None = None) -> tuple[str, str]:
    """Signed thumb/full URLs: they expire, and die with the share link they were handed out through."""
    sig = sign_image(signing_key(), image_set_id, image_id, image_sig_expiry(get_settings().image_url_ttl), share_id)
    base = f"{API}/image-sets/{image_set_id}/images/{image_id}"
    return f"{base}/thumb?sig={sig}", f"{base}/full?sig={sig}"


def img(image_set_id: int, image_id: int, label: int, classes: list[str], score: float | None = None,
        share_id: int | None = None) -> dict:
    thumb, full = image_urls(image_set_id, image_id, share_id)
    return {"image_id": int(image_id), "image_set_id": int(image_set_id), "label": int(label),
            "label_name": classes[label] if 0 <= label < len(classes) else str(label), "score": score,
            "thumb_url": thumb, "full_url": full}


def job_out(job: Job, children: list[int]) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress or {},
            "error": job.error, "spec": job.spec or {}, "run_id": job.run_id, "parent_id": job.parent_id,
            "children": children, "depends_on_id": job.depends_on_id, "seq": job.seq, "attempts": job.attempts,
            "worker": job.worker, "cancel_requested": job.cancel_requested, "heartbeat_at": job.heartbeat_at,
            "result": job.result or {}, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at}


def jobs_out(db: Session, jobs: Iterable[Job]) -> list[dict[str, Any]]:
    jobs = list(jobs)
    ids = [j.id for j in jobs]
    kids: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for cid, pid in db.execute(select(Job.id, Job.parent_id).where(Job.parent_id.in_(ids)).order_by(Job.seq)):
            kids[pid].append(cid)
    return [job_out(j, kids[j.id]) for j in jobs]


def headline(run: Run) -> dict:
    h = run.headline or {}
    return {m: h.get(m) for m in (*METRICS, "acc_init", "acc_final", "delta_acc")}


def run_item(run: Run) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "status": run.status, "model": run.model.name if run.model else None,
            "model_id": run.model_id, "layers": list(run.layers or []), "attack_kind": run.attack_kind,
            "created_at": run.created_at, "finished_at": run.finished_at, "headline": headline(run),
            "job_id": run.job_id}


def run_detail(run: Run, read_only: bool) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "status": run.status, "model": run.model.name if run.model else None,
            "model_id": run.model_id, "attack": run.attack, "embedder": run.embedder,
            "embedder_warning": run.embedder_warning, "k_clip": run.k_clip, "layers": list(run.layers or []),
            "table": run.table or [], "accuracy": run.accuracy or {}, "alpha_trajectory": run.alpha_trajectory or [],
            "history": run.history or [], "pushup": run.pushup, "per_unit": run.per_unit or {},
            "clip_similarity": run.clip_similarity or {}, "layer_info": run.layer_info or {},
            "train_set_id": run.train_set_id, "val_set_id": run.val_set_id, "job_id": run.job_id,
            "error": run.error, "created_at": run.created_at, "finished_at": run.finished_at,
            "read_only": read_only}


def unit_row(u: UnitResult) -> dict[str, Any]:
    return {"unit": u.unit, "attacked": u.attacked, "dead": u.dead, **{m: getattr(u, m) for m in METRICS}}


def topk_images(db: Session, entry: dict, share_id: int | None = None) -> dict[str, list[dict]]:
    sid = int(entry["image_set_id"])
    classes = classes_of(db, sid)
    out = {}
    for side in ("before", "after"):
        t = entry.get(side) or {}
        out[side] = [img(sid, i, lab, classes, s, share_id) for i, s, lab in
                     zip(t.get("ids", []), t.get("scores", []), t.get("labels", []))]
    return out


def _neighbour(sorted_units: list[int], unit: int, direction: int) -> int | None:
    import bisect

    if direction < 0:
        i = bisect.bisect_left(sorted_units, unit)
        return sorted_units[i - 1] if i > 0 else None
    i = bisect.bisect_right(sorted_units, unit)
    return sorted_units[i] if i < len(sorted_units) else None


def unit_detail(db: Session, run: Run, u: UnitResult, read_only: bool, share_id: int | None = None) -> dict[str, Any]:
    info = (run.layer_info or {}).get(u.layer, {})
    n = int(info.get("units") or 0)
    attacked = sorted(int(x) for x in info.get("attacked", []))
    syn_before = f"{API}/runs/{run.id}/layers/{u.layer}/units/{u.unit}/synthetic/before" if u.synthetic_before_id else None
    syn_after = f"{API}/runs/{run.id}/layers/{u.layer}/units/{u.unit}/synthetic/after" if u.synthetic_after_id else None
    return {
        "unit": u.unit, "layer": u.layer, "attacked": u.attacked, "dead": u.dead,
        "metrics": {m: getattr(u, m) for m in METRICS},
        "topk": {role: topk_images(db, entry, share_id) for role, entry in (u.topk or {}).items()},
        "nearest": u.nearest or {}, "clip_self": u.clip_self or {},
        "synthetic": {"before": syn_before, "after": syn_after},
        "prev_unit": u.unit - 1 if u.unit > 0 else None,
        "next_unit": u.unit + 1 if u.unit + 1 < n else None,
        "prev_attacked": _neighbour(attacked, u.unit, -1), "next_attacked": _neighbour(attacked, u.unit, 1),
        "read_only": read_only,
    }
