"""A daemon thread that calls a function every ``interval`` seconds until stopped: the API's
housekeeping (the reaper's passes, returning freed heap to the system) runs on it."""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("fvaudit.periodic")


class Periodic:
    """``every(interval)`` calls ``work()`` in a daemon thread; an exception is logged, never
    raised (housekeeping must not take the server down). ``enabled=False``: ``start`` does nothing."""

    def __init__(self, name: str, interval: float, work: Callable[[], None], enabled: bool = True) -> None:
        self.name, self.interval, self.work = name, interval, work
        self.enabled = enabled and interval > 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"fvaudit-{name}", daemon=True)

    def start(self) -> "Periodic":
        if self.enabled:
            self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.work()
            except Exception as exc:
                log.warning("%s failed: %s: %s", self.name, type(exc).__name__, exc)
