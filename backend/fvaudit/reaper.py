"""``fvaudit reaper``: the job reaper as its own process (see :mod:`fvaudit.jobs.reaper`)."""
from __future__ import annotations

import logging
import time

from fvaudit.jobs.reaper import ReaperThread, reap_once

__all__ = ["ReaperThread", "reap_once", "main"]


def main(interval: float, once: bool = False, max_attempts: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    while True:
        res = reap_once(max_attempts=max_attempts)
        if once:
            print({k: v for k, v in res.items()})
            return 0
        if any(res.values()):
            logging.getLogger("fvaudit.reaper").info("%s", {k: v for k, v in res.items() if v})
        time.sleep(interval)
