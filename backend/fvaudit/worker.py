"""Celery app (service mode) and the single task that runs a job by id.

The task receives only the job id; the row holds everything else. Settings follow
shared/ARCHITECTURE.md: prefork pool, concurrency 1 per GPU, prefetch 1, ``acks_late``
with an idempotent runner (the claim is a conditional UPDATE, so a redelivered message
is a no-op), a Redis ``visibility_timeout`` above the longest job, and CUDA touched only
in the pool child: this module imports neither torch nor the engine; the task imports
the runner lazily, inside the child that runs it.

Start with ``fvaudit worker`` (or ``celery -A fvaudit.worker worker --pool prefork
--concurrency 1``); one worker process per GPU (``CUDA_VISIBLE_DEVICES``).
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from fvaudit.config import get_settings
from fvaudit.jobs.dispatch import TASK_NAME

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


@worker_process_init.connect
def _fresh_child(**_kw) -> None:
    """A forked pool child must not reuse the parent's DB connections (it has none by design).

    It may start processes of its own: the input pipeline's DataLoader workers (a daemonic
    process may not have children; they exit with their parent through DataLoader's watchdog)."""
    from multiprocessing import current_process

    from fvaudit.db.session import dispose_all

    dispose_all()
    current_process().daemon = False


@app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
def run_job_task(job_id: int) -> str:
    from fvaudit.jobs.context import worker_name
    from fvaudit.jobs.runner import run_job  # torch and the engine load here, in the child

    s = get_settings()
    if s.torch_threads:
        import torch

        torch.set_num_threads(s.torch_threads)
    return run_job(int(job_id), worker=worker_name("celery"))


def main(argv: list[str] | None = None) -> None:
    s = get_settings()
    args = ["worker", "--pool=prefork", "--concurrency=1", "--prefetch-multiplier=1", "-Q", s.celery_queue,
            "--loglevel=INFO", "-E"]
    app.worker_main(args + list(argv or []))
