"""How long engine work reports progress and learns it should stop.

The engine never imports the CLI, the web service or the DB; callers hand it a
:class:`Reporter`. The CLI's reporter draws a progress bar, a job's reporter writes the
job row (progress, heartbeat) and answers ``cancelled()`` from its cancel flag.
"""
from __future__ import annotations

from typing import Any, Protocol


class Cancelled(Exception):
    """Raised inside engine loops when the reporter says the work should stop.

    ``where`` says how far the work went ("at step 120"), empty when the loop has nothing to
    add; the message is the one reason a cancelled job records: "cancelled on request" and
    the place in parentheses.
    """

    def __init__(self, where: str = "") -> None:
        self.where = where
        super().__init__("cancelled on request" + (f" ({where})" if where else ""))


class Reporter(Protocol):
    def stage(self, name: str, total: int | None = None) -> None: ...
    def advance(self, done: int, total: int | None = None, **info: Any) -> None: ...
    def log(self, message: str, **info: Any) -> None: ...
    def cancelled(self) -> bool: ...


class NullReporter:
    """Reports nowhere, never cancels (notebooks, tests)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def stage(self, name: str, total: int | None = None) -> None:
        self.events.append(("stage", name))

    def advance(self, done: int, total: int | None = None, **info: Any) -> None:
        pass

    def log(self, message: str, **info: Any) -> None:
        self.events.append(("log", message))

    def cancelled(self) -> bool:
        return False


def check_cancel(reporter: Reporter) -> None:
    if reporter.cancelled():
        raise Cancelled()
