"""The single Celery task that runs a job by id (the app: :mod:`fvaudit.celery_app`).

The task receives only the job id; the row holds everything else. CUDA is touched only
in the pool child: this module imports neither torch nor the engine; the task imports
the runner lazily, inside the child that runs it.

Start with ``fvaudit worker`` (or ``celery -A fvaudit.worker worker --pool prefork
--concurrency 1``); one worker process per GPU (``CUDA_VISIBLE_DEVICES``).
"""
from __future__ import annotations

from celery.signals import worker_process_init

from fvaudit.celery_app import TASK_NAME, app
from fvaudit.config import get_settings

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
