"""Create job rows (and runs, and a chain's children) from a validated spec.

The row is written first (status ``queued``); only after the transaction commits does
the caller publish the ids of the runnable ones (:func:`fvaudit.jobs.dispatch.publish`).
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from fvaudit.db.models import TERMINAL, Job, Model, Run, User, clean_json
from fvaudit.jobs.lifecycle import log_event


def _run_name(db: Session, spec: dict) -> str:
    if spec.get("name"):
        return spec["name"]
    model = db.get(Model, spec["model_id"])
    a = spec["attack"]
    return f"{model.name if model else spec['model_id']} {a['layer']} {a['kind']}"


def _new_run(db: Session, user: User, spec: dict, kind: str) -> Run:
    a = spec.get("attack") or {}
    run = Run(name=_run_name(db, spec) if a else (spec.get("name") or "metrics"), owner_id=user.id,
              model_id=spec.get("model_id"), status="queued", attack_kind=a.get("kind"),
              layers=[a["layer"]] if a else list(spec.get("layers") or []), attack=clean_json(a) if a else None,
              train_set_id=spec.get("train_set_id"), val_set_id=spec.get("val_set_id"),
              k_clip=spec.get("k_clip", 5), embedder=None)
    db.add(run)
    db.flush()
    return run


def _dependency(db: Session, ids: list[int | None]) -> int | None:
    """The latest referenced job that has not succeeded yet (the new job waits for it)."""
    pending = [i for i in ids if i is not None and db.get(Job, i) is not None and db.get(Job, i).status != "succeeded"]
    return max(pending) if pending else None


def create_job(db: Session, user: User, kind: str, spec: dict) -> tuple[Job, list[int]]:
    """Write the job (and children); returns (top-level job, ids to publish after commit)."""
    if kind == "audit":
        return _create_audit(db, user, spec)
    run_id = None
    depends = None
    if kind == "attack":
        run_id = _new_run(db, user, spec, kind).id
        depends = _dependency(db, [spec.get("init_scan_job_id")])
    elif kind == "scan":
        wf = spec.get("weights_from") or {}
        depends = _dependency(db, [wf.get("job_id")])
    elif kind == "metrics":
        attack_job = db.get(Job, spec["attack_job_id"]) if spec.get("attack_job_id") else None
        if attack_job is not None and attack_job.run_id is not None:
            run_id = attack_job.run_id
        else:
            before = db.get(Job, spec["before_scan_job_id"])
            run = _new_run(db, user, {**spec, "model_id": before.spec["model_id"]}, kind)
            run_id = run.id
        depends = _dependency(db, [spec["before_scan_job_id"], spec["after_scan_job_id"], spec.get("attack_job_id")])
    job = Job(kind=kind, spec=clean_json(spec), status="queued", owner_id=user.id, run_id=run_id,
              depends_on_id=depends, progress={"stage": "queued", "done": 0, "total": None})
    db.add(job)
    db.flush()
    if run_id is not None:
        run = db.get(Run, run_id)
        if run.job_id is None:
            run.job_id = job.id
        if run.status in TERMINAL:
            run.status = "queued"
    log_event(db, job.id, f"{kind} job created by {user.name}")
    return job, ([job.id] if depends is None else [])


def _create_audit(db: Session, user: User, spec: dict) -> tuple[Job, list[int]]:
    a = spec["attack"]
    layer = a["layer"]
    k_scan = max(a["k"], spec["k_clip"])
    run = _new_run(db, user, spec, "audit")
    run.embedder = spec.get("embedder")
    parent = Job(kind="audit", spec=clean_json(spec), status="queued", owner_id=user.id, run_id=run.id,
                 progress={"stage": "queued", "done": 0, "total": 4})
    db.add(parent)
    db.flush()
    run.job_id = parent.id
    sets = [spec["train_set_id"], spec["val_set_id"]]
    if sets[0] == sets[1]:
        sets = sets[:1]
    ckpt = spec.get("checkpoint_path")

    def child(seq: int, kind: str, cspec: dict, depends: int | None) -> Job:
        j = Job(kind=kind, spec=clean_json(cspec), status="queued", owner_id=user.id, run_id=run.id,
                parent_id=parent.id, depends_on_id=depends, seq=seq,
                progress={"stage": "waiting" if depends else "queued", "done": 0, "total": None})
        db.add(j)
        db.flush()
        return j

    scan_init = child(1, "scan", {"model_id": spec["model_id"], "image_set_ids": sets, "layers": [layer], "k": k_scan,
                                  "batch_size": spec["scan_batch_size"], "weights_from": None,
                                  "checkpoint_path": ckpt}, None)
    attack = child(2, "attack", {"name": run.name, "model_id": spec["model_id"], "train_set_id": spec["train_set_id"],
                                 "val_set_id": spec["val_set_id"], "attack": a, "init_scan_job_id": scan_init.id,
                                 "checkpoint_path": ckpt}, scan_init.id)
    scan_final = child(3, "scan", {"model_id": spec["model_id"], "image_set_ids": sets, "layers": [layer],
                                   "k": k_scan, "batch_size": spec["scan_batch_size"],
                                   "weights_from": {"job_id": attack.id, "state": "selected"},
                                   "checkpoint_path": None}, attack.id)
    child(4, "metrics", {"name": run.name, "before_scan_job_id": scan_init.id, "after_scan_job_id": scan_final.id,
                         "val_set_id": spec["val_set_id"], "train_set_id": spec["train_set_id"],
                         "attack_job_id": attack.id, "layers": [layer], "k_clip": spec["k_clip"],
                         "embedder": spec["embedder"]}, scan_final.id)
    log_event(db, parent.id, f"audit created by {user.name}: scan θ_init → {a['kind']} → scan θ_final → metrics")
    return parent, [scan_init.id]
