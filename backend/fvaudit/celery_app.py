"""The Celery app and the one task name: imported by :mod:`fvaudit.jobs.dispatch` (which
sends wake-ups) and by :mod:`fvaudit.worker` (which runs them), so that the API process
never imports the worker module.

Settings follow shared/ARCHITECTURE.md: prefork pool, concurrency 1 per GPU, prefetch 1,
``acks_late`` with an idempotent runner (the claim is a conditional UPDATE, so a
redelivered message is a no-op), a Redis ``visibility_timeout`` above the longest job.
"""
from __future__ import annotations

from celery import Celery

from fvaudit.config import get_settings

TASK_NAME = "fvaudit.run_job"

_settings = get_settings()

app = Celery("fvaudit", broker=_settings.broker_url or "redis://127.0.0.1:6379/0")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=False,        # the reaper decides (requeue from checkpoint, or fail)
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    worker_pool="prefork",
    worker_max_tasks_per_child=_settings.worker_max_tasks_per_child or None,
    worker_hijack_root_logger=False,
    worker_send_task_events=True,            # for flower
    task_send_sent_event=True,
    task_default_queue=_settings.celery_queue,
    task_routes={TASK_NAME: {"queue": _settings.celery_queue}},
    # a broker outage must not kill a running job: the row, not the message, is the truth
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry=True,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    broker_connection_timeout=4,
    broker_transport_options={
        "visibility_timeout": _settings.visibility_timeout,
        "socket_connect_timeout": 4,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    },
    broker_pool_limit=4,
)
