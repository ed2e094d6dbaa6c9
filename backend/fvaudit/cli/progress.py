"""A Rich progress bar as an engine Reporter (the CLI's face of long work)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichReporter:
    def __init__(self, console: Console | None = None, verbose: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.task = None
        self.name = ""

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=True)
        self.name = name
        self.task = self.progress.add_task(name, total=total, info="")

    def advance(self, done: int, total: int | None = None, **info: Any) -> None:
        if self.task is None:
            self.stage("work", total)
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items() if k != "step")
        self.progress.update(self.task, completed=done, total=total, info=text)

    def log(self, message: str, **info: Any) -> None:
        if self.verbose:
            self.progress.console.log(message)

    def cancelled(self) -> bool:
        return False
