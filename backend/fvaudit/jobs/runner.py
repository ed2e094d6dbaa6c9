"""Run one job by id: claim it, run its kind's module, record the outcome. Idempotent.

The claim is one conditional UPDATE (``queued`` → ``running`` with a fresh lease), so a
duplicate wake-up (Celery redelivery, a re-sent message after a broker restart, two
local workers) finds nothing to do. Every failure records why in ``jobs.error``.
Used by the Celery task (:mod:`fvaudit.worker`) and the embedded local worker.
"""
from __future__ import annotations

import logging
import shutil
import traceback
import uuid

from sqlalchemy import func, or_, select, update

from fvaudit.config import get_settings
from fvaudit.db.tables import Job, utcnow
from fvaudit.db.session import session_scope
from fvaudit.jobs.context import Heartbeat, JobContext, LeaseLost
from fvaudit.jobs.dispatch import publish
from fvaudit.jobs.queries import runnable_condition
from fvaudit.jobs.lifecycle import after_terminal, finish, log_event, set_run_status, status_event
from fvaudit.jobs.registry import get_kind, is_kind
from fvaudit.sanitize import clean_message, clean_reason
from fvaudit.store import get_store

log = logging.getLogger("fvaudit.runner")


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {msg}"[:4000]


def claim(job_id: int, worker: str) -> tuple[Job, str] | None:
    """Atomically take a runnable queued job; None if there is nothing to do."""
    lease = uuid.uuid4().hex
    with session_scope() as db:
        job = db.get(Job, job_id)
        if job is None or not is_kind(job.kind) or not get_kind(job.kind).runnable:
            return None
        if job.status == "queued" and job.cancel_requested:
            res = db.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                             .values(status="cancelled", finished_at=utcnow(), error="cancelled on request"))
            if res.rowcount:
                db.refresh(job)
                status_event(db, job)
                db.flush()
                after_terminal(db, job)
            return None
        now = utcnow()
        res = db.execute(
            update(Job).where(Job.id == job_id, runnable_condition())
            .values(status="running", lease=lease, worker=worker, attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now), heartbeat_at=now, error=None,
                    progress={"stage": "starting", "done": 0, "total": None})
            .execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return None
        db.refresh(job)
        status_event(db, job)
        if job.attempts > 1:
            log_event(db, job.id, f"attempt {job.attempts} on {worker}")
        db.flush()
        from fvaudit.jobs.lifecycle import refresh_parent

        if job.parent_id is not None:
            refresh_parent(db, job.parent_id)
        else:
            set_run_status(db, job)
        group = db.get(Job, job.group_job_id) if job.group_job_id is not None else None
        if group is not None and group.parent_id is not None:     # a chain step's shard: the chain is at work
            refresh_parent(db, group.parent_id)
        db.expunge(job)
    return job, lease


def run_job(job_id: int, worker: str = "worker") -> str:
    """Run the job if it can be claimed. Returns what happened (for logs and tests)."""
    from fvaudit.engine.progress import Cancelled

    claimed = claim(job_id, worker)
    if claimed is None:
        return "skipped"
    job, lease = claimed
    settings = get_settings()
    chain_len = 4
    if job.parent_id is not None:
        with session_scope() as db:
            chain_len = db.scalar(select(func.count()).select_from(Job).where(Job.parent_id == job.parent_id)) or 4
    ctx = JobContext(job, lease, settings, get_store(), worker, chain_len)
    outcome, error, result = "succeeded", None, None
    try:
        with Heartbeat(job.id, lease, settings.heartbeat_interval, ctx.reporter.lost):
            try:
                kind = get_kind(job.kind)
                spec = kind.spec.model_validate(job.spec)      # the typed spec, as validated at submission
                result = kind.run(spec, ctx) or {}
                ctx.reporter.flush(force=True)
            except Cancelled as exc:
                outcome, error = "cancelled", str(exc)
                result = {"cancel": ctx.reporter.cancel_info or {}}
            except LeaseLost:
                raise
            except Exception as exc:
                outcome, error = "failed", _error_text(exc)
                tb = traceback.format_exc()
                log.error("job %s failed: %s", job.id, tb)
                try:
                    ctx.reporter.log(f"failed: {clean_reason(error)}", traceback=clean_message(tb[-8000:], 8000))
                except LeaseLost:
                    raise
                except Exception:
                    pass
    except LeaseLost as exc:
        log.warning("job %s: %s; leaving it to its new owner", job.id, exc)
        return "lost"
    wake: list[int] = []
    with session_scope() as db:
        row = db.get(Job, job.id, with_for_update=not settings.is_sqlite)
        if row is None or row.lease != lease or row.status != "running":
            return "lost"
        if outcome == "cancelled" and row.cancel_requested is False:
            outcome = "failed"
        finish(db, row, outcome, error, result)
        if outcome == "succeeded":
            wake = [d.id for d in db.scalars(select(Job).where(
                or_(Job.depends_on_id == row.id, Job.id == row.group_job_id), runnable_condition()))]
        if wake:
            publish(db, wake)
    if outcome in ("succeeded", "cancelled"):
        shutil.rmtree(ctx.work_dir, ignore_errors=True)   # results are in the store; a failed job's stays for a look
    return outcome
