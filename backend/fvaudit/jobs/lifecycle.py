"""Status transitions shared by the runner, the reaper and the API (cancel).

Every transition writes a ``status`` event (the SSE stream turns it into the job's
current JSON). After a job ends, :func:`after_terminal` wakes the jobs that depended on
it (or fails / cancels them when it did not succeed), recomputes its chain parent and
the run's status.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from fvaudit.db.tables import TERMINAL, Job, JobEvent, Run, clean_json, utcnow
from fvaudit.sanitize import clean_reason


def add_event(db: Session, job_id: int, type_: str, data: dict[str, Any]) -> None:
    db.add(JobEvent(job_id=job_id, type=type_, data=clean_json(data)))


def log_event(db: Session, job_id: int, message: str, **info: Any) -> None:
    add_event(db, job_id, "log", {"message": message, **info})


def status_event(db: Session, job: Job) -> None:
    add_event(db, job.id, "status", {"status": job.status, "job_id": job.id})
    if job.parent_id is not None:
        add_event(db, job.parent_id, "log", {"message": f"step {job.seq} ({job.step_key or job.kind}, job {job.id}) "
                                                        f"{job.status}",
                                             "job_id": job.id, "status": job.status, "step_key": job.step_key})


def set_run_status(db: Session, job: Job) -> None:
    """A standalone job's run follows the job; a chain child's run follows the chain parent."""
    if job.run_id is None:
        return
    run = db.get(Run, job.run_id)
    if run is None:
        return
    src = db.get(Job, job.parent_id) if job.parent_id is not None else job
    if src is None:
        return
    status, error = src.status, src.error
    if job.parent_id is not None and _runs_follow_steps(src.kind):
        status, error = _steps_status(db, job.parent_id, run.id)
    if run.status != status:
        run.status = status
        if status in TERMINAL:
            run.finished_at = utcnow()
            if status == "failed":
                run.error = error
        else:
            run.finished_at = None


def _runs_follow_steps(kind: str) -> bool:
    """A chain whose runs are independent results (a sweep's points): each run follows its own steps."""
    from fvaudit.jobs.registry import get_kind, is_kind

    return is_kind(kind) and get_kind(kind).runs_follow_steps


def _steps_status(db: Session, parent_id: int, run_id: int) -> tuple[str, str | None]:
    """(status, error) of the chain steps that write into one run (one point of a sweep)."""
    steps = db.scalars(select(Job).where(Job.parent_id == parent_id, Job.run_id == run_id).order_by(Job.seq)
                       .execution_options(populate_existing=True)).all()
    statuses = [s.status for s in steps]
    failed = next((s for s in steps if s.status == "failed"), None)
    if failed is not None:
        return "failed", f"step {failed.seq} ({failed.step_key or failed.kind}, job {failed.id}) failed: {failed.error}"
    if statuses and all(s in TERMINAL for s in statuses):
        return ("succeeded" if all(s == "succeeded" for s in statuses) else "cancelled"), None
    return ("running" if any(s in ("running", "succeeded") for s in statuses) else "queued"), None


def refresh_parent(db: Session, parent_id: int) -> Job | None:
    parent = db.get(Job, parent_id, populate_existing=True)
    if parent is None:
        return None
    children = db.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.seq).execution_options(
        populate_existing=True)).all()
    if not children:
        return parent
    statuses = [c.status for c in children]
    failed = next((c for c in children if c.status == "failed"), None)
    if failed is not None and _runs_follow_steps(parent.kind) and not all(s in TERMINAL for s in statuses):
        new = "running"             # a sweep: its other points run on; it fails, with this reason, when they end
    elif failed is not None:
        new = "failed"
    elif "cancelled" in statuses and all(s in TERMINAL for s in statuses):
        new = "cancelled"
    elif all(s == "succeeded" for s in statuses):
        new = "succeeded"
    elif any(s in ("running", "succeeded") for s in statuses) and "cancelled" not in statuses:
        new = "running"
    elif "cancelled" in statuses:
        new = "running" if any(s == "running" for s in statuses) else "cancelled"
    elif db.scalar(select(exists().where(Job.group_job_id.in_([c.id for c in children]),
                                         Job.status.in_(("running", "succeeded"))))):
        new = "running"             # a step still queued waits for its group, whose members are at work
    else:
        new = "queued"
    if new != parent.status:
        parent.status = new
        if new == "running" and parent.started_at is None:
            parent.started_at = min((c.started_at for c in children if c.started_at), default=utcnow())
        if new in TERMINAL:
            parent.finished_at = utcnow()
            if new == "failed" and failed is not None:
                parent.error = (f"step {failed.seq} ({failed.step_key or failed.kind}, job {failed.id}) failed: "
                                f"{failed.error}")
            if new == "cancelled":
                parent.error = parent.error or "cancelled on request"
        status_event(db, parent)
        db.flush()
        seen: set[int] = set()
        for c in children:          # every run of the chain (e.g. the attack's and its control's)
            if c.run_id is not None and c.run_id not in seen:
                seen.add(c.run_id)
                set_run_status(db, c)
    elif _runs_follow_steps(parent.kind):     # a sweep's point runs move with their own steps
        for c in {c.run_id: c for c in children if c.run_id is not None}.values():
            set_run_status(db, c)
    return parent


def finish(db: Session, job: Job, status: str, error: str | None = None, result: dict | None = None) -> None:
    job.status = status
    job.finished_at = utcnow()
    job.lease = None
    if error is not None:
        job.error = clean_reason(error)     # no ANSI escapes / control characters, no server paths
    if result is not None:
        job.result = clean_json({**(job.result or {}), **result})
    status_event(db, job)
    db.flush()
    after_terminal(db, job)


def after_terminal(db: Session, job: Job) -> list[int]:
    """Propagate a finished job; returns ids of dependents that became runnable (to publish)."""
    wake: list[int] = []
    dependents = db.scalars(select(Job).where(Job.depends_on_id == job.id, Job.status == "queued")).all()
    for d in dependents:
        if job.status == "succeeded":
            if not d.cancel_requested:
                wake.append(d.id)
            continue
        wake.extend(_not_run(db, d, job, "upstream job"))
    if job.group_job_id is not None:
        wake.extend(_member_ended(db, job))
    if job.parent_id is not None:
        refresh_parent(db, job.parent_id)
    else:
        set_run_status(db, job)
    return wake


def _not_run(db: Session, job: Job, cause: Job, what: str) -> list[int]:
    """End a queued ``job`` that can no longer run because ``cause`` did not succeed (failed →
    failed, cancelled → cancelled, with the reason), and propagate; returns ids to wake."""
    job.status = "cancelled" if cause.status == "cancelled" else "failed"
    job.error = (f"not run: {what} {cause.id}" + (f" ({cause.kind})" if what == "upstream job" else "")
                 + f" {cause.status}" + (f": {cause.error}" if cause.error and cause.status == "failed" else ""))
    job.finished_at = utcnow()
    status_event(db, job)
    db.flush()
    return after_terminal(db, job)


def _member_ended(db: Session, member: Job) -> list[int]:
    """A group member ended: count it on the group job; the last success makes the group job
    runnable (returned, to publish); a failure or cancel ends the group job (and, through it,
    whatever waits for it) and cancels the other members."""
    # the group's row lock orders members that end at the same time: the last one sees every other
    # member's status committed, so it is the one that makes the group runnable
    group = db.get(Job, member.group_job_id, populate_existing=True,
                   with_for_update=db.get_bind().dialect.name != "sqlite")
    if group is None or group.status in TERMINAL:
        return []
    members = db.scalars(select(Job).where(Job.group_job_id == group.id).order_by(Job.seq)
                         .execution_options(populate_existing=True)).all()
    if member.status == "succeeded":
        done = sum(1 for m in members if m.status == "succeeded")
        group.progress = {**(group.progress or {}), "stage": "shards", "done": done, "total": len(members)}
        add_event(db, group.id, "progress", dict(group.progress))
        if done == len(members) and group.status == "queued" and not group.cancel_requested:
            from fvaudit.jobs.queries import runnable_condition

            return list(db.scalars(select(Job.id).where(Job.id == group.id, runnable_condition())))
        return []
    if group.status != "queued":        # running: it no longer reads its members
        return []
    wake = _not_run(db, group, member, f"{member.kind} job")
    others = [m.id for m in members if m.status not in TERMINAL and not m.cancel_requested]
    if others and db.get_bind().dialect.name != "sqlite":
        # a member locked right now is ending in its own transaction (it will find the group ended);
        # waiting for its lock while holding the group's could deadlock with it
        others = list(db.scalars(select(Job.id).where(Job.id.in_(others)).with_for_update(skip_locked=True)))
    for m in members:
        if m.id in others:
            request_cancel(db, m)
    return wake


def request_cancel(db: Session, job: Job) -> list[int]:
    """Set the cancel flag on a job and its unfinished children; queued ones end at once.

    Running ones stop at their next step (the runner checks the flag). Returns ids of
    jobs whose status changed here.
    """
    from fvaudit.jobs.registry import chain_kinds

    changed: list[int] = []
    now = utcnow()
    chains = chain_kinds()
    targets = [job] + list(db.scalars(select(Job).where(Job.parent_id == job.id).order_by(Job.seq)).all())
    # and the group members (a scan's shards) of every target
    targets += list(db.scalars(select(Job).where(Job.group_job_id.in_([t.id for t in targets]))
                               .order_by(Job.id)).all())
    for j in targets:
        if j.status in TERMINAL:
            continue
        db.execute(update(Job).where(Job.id == j.id).values(cancel_requested=True, cancel_requested_at=now))
        res = db.execute(update(Job).where(Job.id == j.id, Job.status == "queued", Job.kind.not_in(chains))
                         .values(status="cancelled", finished_at=now, error="cancelled on request"))
        db.refresh(j)
        if res.rowcount:
            changed.append(j.id)
            status_event(db, j)
            db.flush()
            after_terminal(db, j)
    if job.kind in chains:
        db.flush()
        refresh_parent(db, job.id)
        db.refresh(job)
        if job.status not in TERMINAL and all(
                c.status in TERMINAL for c in db.scalars(select(Job).where(Job.parent_id == job.id))):
            job.status = "cancelled"
            job.finished_at = now
            status_event(db, job)
    return changed
