"""Embedded mode's worker: polls the database for runnable jobs and runs them in-process.

Same runner as the Celery task (:func:`fvaudit.jobs.runner.run_job`), no broker. Started
by ``fvaudit serve`` / ``fvaudit demo`` as child processes (``python -m
fvaudit.local_worker [--quick]``) or on its own by ``fvaudit worker`` when no broker is configured.

``fvaudit serve`` starts ``local_workers`` general workers (each with its share of the
cores as torch threads) and one quick-lane worker (``--quick``) that takes only kinds
declared ``quick`` (a folder's indexing): with a single worker, registering a folder
waited 7 minutes behind the demo's render. Several workers are safe: a job is claimed by
one conditional UPDATE (:func:`fvaudit.jobs.runner.claim`), the loser skips it.
"""
from __future__ import annotations

import logging
import signal
import sys
import time

from sqlalchemy import select

from fvaudit.config import get_settings
from fvaudit.db.tables import Job
from fvaudit.db.session import session_scope

log = logging.getLogger("fvaudit.local_worker")
_stop = False


def _on_term(signum, frame):  # finish nothing more; the running job is requeued by the reaper
    global _stop
    _stop = True
    raise KeyboardInterrupt


def next_job(quick_only: bool = False, exclude_quick: bool = False) -> int | None:
    from fvaudit.jobs.queries import runnable_condition

    with session_scope() as db:
        return db.scalar(select(Job.id).where(runnable_condition(quick_only, exclude_quick)).order_by(Job.id)
                         .limit(1))


def main(once: bool = False, quick_only: bool = False, exclude_quick: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_term)
    settings = get_settings()
    from fvaudit.jobs.context import worker_name
    from fvaudit.jobs.runner import run_job

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    name = worker_name("local-quick" if quick_only else "local")
    log.info("local worker %s polling %s", name, settings.db_url.split("@")[-1])
    try:
        while not _stop:
            try:
                jid = next_job(quick_only, exclude_quick)
            except Exception as exc:  # database not ready yet / locked: retry
                log.warning("poll failed: %s", exc)
                time.sleep(2)
                continue
            if jid is None:
                if once:
                    return 0
                time.sleep(settings.local_poll_interval)
                continue
            outcome = run_job(jid, worker=name)
            log.info("job %s: %s", jid, outcome)
    except KeyboardInterrupt:
        log.info("local worker stopping")
    return 0


if __name__ == "__main__":
    # --general: leave quick kinds to the quick lane (``fvaudit serve`` starts one beside)
    sys.exit(main("--once" in sys.argv, quick_only="--quick" in sys.argv, exclude_quick="--general" in sys.argv))
