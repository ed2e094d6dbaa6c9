"""The reaper: no job stays "running" for a dead worker, no queued job waits for a lost message.

Each pass (every ``reaper_interval`` s, in the API process or ``fvaudit reaper``):

1. a ``running`` job whose heartbeat is older than ``heartbeat_timeout`` belongs to a
   dead (or hung) worker: it is requeued (its lease revoked, so the old runner can no
   longer write) while ``attempts < max_attempts`` — an attack then resumes from its last
   checkpoint — else failed with the reason; a job whose cancel was requested is cancelled;
2. in service mode, a runnable ``queued`` job whose wake-up was sent more than
   ``requeue_after`` s ago (or never) gets it again: a broker restart that lost its
   queue loses no job (the runner's claim makes duplicates harmless);
3. chain parents are reconciled with their children;
4. each kind's housekeeping (``JobKind.reap``) removes files its ended jobs left behind.

Every UPDATE is conditional on the state read, so several reapers may run at once.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from sqlalchemy import or_, select, update

from fvaudit.config import Settings, get_settings
from fvaudit.db.tables import TERMINAL, Job, utcnow
from fvaudit.db.session import session_scope
from fvaudit.jobs.dispatch import publish
from fvaudit.jobs.queries import runnable_condition
from fvaudit.jobs.lifecycle import after_terminal, log_event, refresh_parent, status_event
from fvaudit.periodic import Periodic

log = logging.getLogger("fvaudit.reaper")


def worker_process_gone(worker: str | None) -> bool:
    """True when ``worker`` ("kind@host:pid") ran on this host and its process no longer exists."""
    if not worker or "@" not in worker or ":" not in worker:
        return False
    host, _, pid = worker.split("@", 1)[1].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is gone too
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def reap_once(settings: Settings | None = None, max_attempts: int | None = None) -> dict:
    settings = settings or get_settings()
    max_attempts = max_attempts if max_attempts is not None else settings.max_attempts
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.heartbeat_timeout)
    from fvaudit.jobs.registry import chain_kinds

    chains = chain_kinds()
    out = {"requeued": [], "failed": [], "cancelled": [], "republished": []}
    wake: list[int] = []
    with session_scope() as db:
        running = db.scalars(select(Job).where(Job.status == "running", Job.kind.not_in(chains))).all()
        for job in running:
            seen = job.heartbeat_at.isoformat(timespec="seconds") if job.heartbeat_at else "never"
            if job.heartbeat_at is None or job.heartbeat_at < cutoff:
                lost = f"worker {job.worker or '?'} stopped heartbeating (last heartbeat {seen})"
            elif worker_process_gone(job.worker):
                lost = f"worker process {job.worker} is gone (last heartbeat {seen})"
            else:
                continue
            guard = (Job.id == job.id, Job.status == "running", Job.lease == job.lease)
            if job.cancel_requested:
                res = db.execute(update(Job).where(*guard).values(status="cancelled", lease=None, finished_at=now,
                                                                 error=f"cancelled on request; {lost}"))
                bucket = "cancelled"
            elif job.attempts < max_attempts:
                res = db.execute(update(Job).where(*guard).values(status="queued", lease=None, worker=None,
                                                                 enqueued_at=None))
                bucket = "requeued"
            else:
                res = db.execute(update(Job).where(*guard).values(
                    status="failed", lease=None, finished_at=now,
                    error=f"{lost}; gave up after {job.attempts} attempt(s) of {max_attempts}"))
                bucket = "failed"
            if not res.rowcount:
                continue
            db.refresh(job)
            out[bucket].append(job.id)
            if bucket == "requeued":
                log_event(db, job.id, f"{lost}; requeued (attempt {job.attempts + 1} of {max_attempts} next)")
                status_event(db, job)
                wake.append(job.id)
                log.warning("job %s: %s; requeued", job.id, lost)
            else:
                status_event(db, job)
                db.flush()
                wake.extend(after_terminal(db, job))
                log.warning("job %s: %s; %s", job.id, lost, bucket)
        # jobs past FVAUDIT_MAX_JOB_SECONDS (the broker's visibility timeout is above it): stop them
        too_old = now - timedelta(seconds=settings.max_job_seconds)
        for job in db.scalars(select(Job).where(Job.status == "running", Job.kind.not_in(chains),
                                                Job.cancel_requested.is_(False), Job.started_at < too_old)).all():
            db.execute(update(Job).where(Job.id == job.id, Job.cancel_requested.is_(False))
                       .values(cancel_requested=True, cancel_requested_at=now))
            log_event(db, job.id, f"running for more than FVAUDIT_MAX_JOB_SECONDS ({settings.max_job_seconds} s): "
                                  "stopping it")
            out.setdefault("timed_out", []).append(job.id)
        # lost wake-ups (service mode): re-send after requeue_after
        if settings.broker_url:
            resend_before = now - timedelta(seconds=settings.requeue_after)
            waiting = db.scalars(select(Job.id).where(runnable_condition(), or_(Job.enqueued_at.is_(None),
                                                                                Job.enqueued_at < resend_before))).all()
            wake.extend(waiting)
        # chain parents whose children all ended (e.g. a child finished by another reaper)
        parents = db.scalars(select(Job).where(Job.kind.in_(chains), Job.status.in_(("queued", "running")))).all()
        for p in parents:
            refresh_parent(db, p.id)
        db.flush()
        from fvaudit.jobs.registry import all_kinds

        for kind in all_kinds():          # files jobs left behind (a sharded scan's parts once it ended)
            try:
                out.setdefault("swept", []).extend(kind.reap(db, settings))
            except OSError as exc:
                log.warning("reaper: %s housekeeping failed: %s", kind.name, exc)
        wake = sorted(set(wake))
        if wake and settings.broker_url:
            out["republished"] = publish(db, wake)
    return out


def _reap_and_log() -> None:
    res = reap_once()
    if any(res.values()):
        log.info("reaper: %s", {k: v for k, v in res.items() if v})


def reaper_thread(interval: float) -> Periodic:
    """Runs :func:`reap_once` every ``interval`` s in a daemon thread (inside the API)."""
    return Periodic("reaper", interval, _reap_and_log)


def terminal(status: str) -> bool:
    return status in TERMINAL
