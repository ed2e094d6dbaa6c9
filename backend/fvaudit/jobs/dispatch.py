"""Wake-ups: the broker carries job ids, never state.

``publish`` sends ``fvaudit.run_job(job_id)`` through Celery in service mode and does
nothing in embedded mode (the local worker polls the database). A failed publish (the
broker is down) is logged, not raised: the row stays ``queued`` and the reaper re-sends
the wake-up once the broker is back (``requeue_after``).
"""
from __future__ import annotations

import logging
from typing import Iterable

from sqlalchemy import update
from sqlalchemy.orm import Session

from fvaudit.config import get_settings
from fvaudit.db.tables import Job, utcnow

log = logging.getLogger("fvaudit.dispatch")


def publish(db: Session | None, job_ids: Iterable[int]) -> list[int]:
    """Send wake-ups; returns the ids sent. Sets ``enqueued_at`` (when a session is given)."""
    ids = [int(i) for i in job_ids]
    if not ids:
        return []
    settings = get_settings()
    sent: list[int] = []
    if settings.broker_url:
        from celery import group

        from fvaudit.celery_app import TASK_NAME, app

        retry = {"retry": True, "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.5,
                                                 "interval_max": 0.5}}
        if len(ids) > 1:      # one Celery group: idle workers take its members in parallel (a scan's shards)
            try:
                group(app.signature(TASK_NAME, args=[jid], queue=settings.celery_queue) for jid in ids
                      ).apply_async(**retry)
                sent = list(ids)
            except Exception as exc:  # broker down: the reaper re-sends later
                log.warning("could not publish jobs %s as a group (%s: %s); the reaper will retry", ids,
                            type(exc).__name__, exc)
        else:
            try:
                app.send_task(TASK_NAME, args=[ids[0]], queue=settings.celery_queue, **retry)
                sent = list(ids)
            except Exception as exc:  # broker down: the reaper re-sends later
                log.warning("could not publish job %s (%s: %s); the reaper will retry", ids[0], type(exc).__name__,
                            exc)
    else:
        sent = ids
    if db is not None:
        db.execute(update(Job).where(Job.id.in_(ids)).values(enqueued_at=utcnow()))
    return sent
