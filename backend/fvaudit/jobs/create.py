"""Create job rows (and runs, and a chain's children) from a validated, typed spec.

Everything kind-specific comes from the registry: which run a standalone job writes
into and which jobs it waits for (``run_for``, ``depends_on``); the runs of a chain and
its steps (``runs``, ``expand``). The row is written first (status ``queued``); only
after the transaction commits are the ids of the runnable ones published
(:func:`fvaudit.jobs.dispatch.publish`); :func:`submit` does both for every entry point.
"""
from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.orm import Session

from fvaudit.db.tables import TERMINAL, Job, Run, User
from fvaudit.db.session import session_scope
from fvaudit.jobs.dispatch import publish
from fvaudit.jobs.lifecycle import log_event
from fvaudit.jobs.registry import get_kind


def spec_json(spec: BaseModel) -> dict:
    """The row's copy of a typed spec (re-parsed with the kind's model by the runner)."""
    return spec.model_dump(mode="json")


def _dependency(db: Session, ids: list[int]) -> int | None:
    """The latest referenced job that has not succeeded yet (the new job waits for it)."""
    pending = [i for i in ids if (j := db.get(Job, i)) is not None and j.status != "succeeded"]
    return max(pending) if pending else None


def create_job(db: Session, user: User, kind_name: str, spec: BaseModel) -> tuple[Job, list[int]]:
    """Write the job (and children); returns (top-level job, ids to publish after commit)."""
    kind = get_kind(kind_name)
    if kind.is_chain:
        return _create_chain(db, user, kind, spec)
    run = kind.run_for(db, user, spec)
    depends = _dependency(db, kind.depends_on(spec))
    job = Job(kind=kind.name, spec=spec_json(spec), status="queued", owner_id=user.id,
              run_id=run.id if run is not None else None, depends_on_id=depends,
              progress={"stage": "queued", "done": 0, "total": None})
    db.add(job)
    db.flush()
    if run is not None:
        if run.job_id is None:
            run.job_id = job.id
        if run.status in TERMINAL:
            run.status = "queued"
    log_event(db, job.id, f"{kind.name} job created by {user.name}")
    members = _create_members(db, job, kind, spec)
    return job, ((members or [job.id]) if depends is None else [])


def _create_members(db: Session, job: Job, kind, spec: BaseModel) -> list[int]:
    """The group a job waits for (``kind.members``, e.g. a scan's shards): rows with
    ``group_job_id = job.id`` and the job's own dependency. Returns their ids (the wake-ups:
    the job itself becomes runnable when the last member succeeds)."""
    ids: list[int] = []
    for seq, (member_kind, member_spec) in enumerate(kind.members(spec, job.id), start=1):
        m = Job(kind=get_kind(member_kind).name, spec=spec_json(member_spec), status="queued", owner_id=job.owner_id,
                depends_on_id=job.depends_on_id, group_job_id=job.id, seq=seq,
                progress={"stage": "waiting" if job.depends_on_id else "queued", "done": 0, "total": None})
        db.add(m)
        db.flush()
        ids.append(m.id)
    if ids:
        job.progress = {"stage": "shards", "done": 0, "total": len(ids), "members": ids}
        log_event(db, job.id, f"{len(ids)} {member_kind} jobs (a group): " + ", ".join(map(str, ids)))
    return ids


def _create_chain(db: Session, user: User, kind, spec: BaseModel) -> tuple[Job, list[int]]:
    runs: dict[str, Run] = kind.runs(db, user, spec)
    steps = kind.expand(spec)
    main = runs["main"]
    parent = Job(kind=kind.name, spec=spec_json(spec), status="queued", owner_id=user.id, run_id=main.id,
                 progress={"stage": "queued", "done": 0, "total": len(steps)})
    db.add(parent)
    db.flush()
    for r in runs.values():
        r.job_id = parent.id
    ids: dict[str, int] = {}
    wake: list[int] = []
    for seq, step in enumerate(steps, start=1):
        depends = ids[step.after] if step.after is not None else None
        child_kind = get_kind(step.kind)
        job = Job(kind=child_kind.name, spec=spec_json(step.spec(ids)), status="queued", owner_id=user.id,
                  run_id=runs[step.run].id, parent_id=parent.id, depends_on_id=depends, seq=seq, step_key=step.key,
                  progress={"stage": "waiting" if depends else "queued", "done": 0, "total": None})
        db.add(job)
        db.flush()
        ids[step.key] = job.id
        members = _create_members(db, job, child_kind, child_kind.spec.model_validate(job.spec))
        if depends is None:
            wake.extend(members or [job.id])
    kind.created(db, runs, ids)
    log_event(db, parent.id, f"{kind.name} created by {user.name}: "
                             + " → ".join(kind.step_label(s.key) or s.key for s in steps))
    return parent, wake


def submit(user_id: int, kind_name: str, spec: BaseModel | dict) -> int:
    """Launch a job the way every entry point does (``POST /jobs``, ``fvaudit demo``): check the
    spec against the database (:class:`~fvaudit.jobs.registry.JobKind.check`, a
    :class:`~fvaudit.jobs.validate.FieldError` naming the field), write the rows, commit, then
    send the wake-ups. Returns the top-level job's id."""
    kind = get_kind(kind_name)
    with session_scope() as db:
        user = db.get(User, user_id)
        typed = spec if isinstance(spec, BaseModel) else kind.spec.model_validate(spec)
        job, wake = create_job(db, user, kind.name, kind.check(db, user, typed))
        job_id = job.id
    if wake:
        with session_scope() as db:
            publish(db, wake)
    return job_id
