"""What a running job sees: settings, the artifact store, a reporter bound to its row.

:class:`DBReporter` is the engine's :class:`~fvaudit.engine.progress.Reporter` for a
job: progress goes to the row (throttled) and to ``job_events`` (for SSE), ``cancelled()``
reads the row's cancel flag at every call (so an attack stops within one step of the
request), and every write is fenced by the job's lease: a runner whose job was reaped
and handed to another worker stops instead of overwriting it (:class:`LeaseLost`).
A thread beats the heartbeat independently of the engine's loop.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fvaudit.config import Settings
from fvaudit.db.tables import Job, JobEvent, clean_json, utcnow
from fvaudit.db.session import session_scope
from fvaudit.store import ArtifactStore

log = logging.getLogger("fvaudit.jobs")

#: times a progress write is tried again after Postgres chose it as a deadlock victim
DEADLOCK_RETRIES = 3


class LeaseLost(Exception):
    """The job was taken away from this runner (reaped and requeued); stop without writing."""


class DBReporter:
    def __init__(self, job_id: int, lease: str, parent_id: int | None, seq: int, kind: str, settings: Settings,
                 chain_len: int = 4) -> None:
        self.job_id = job_id
        self.lease = lease
        self.parent_id = parent_id
        self.seq = seq
        self.kind = kind
        self.settings = settings
        self.chain_len = chain_len
        self.progress: dict[str, Any] = {"stage": "starting", "done": 0, "total": None}
        self._last_flush = 0.0
        self._dirty = False
        self._advances: collections.deque[tuple[float, int]] = collections.deque(maxlen=100_000)
        self.cancel_info: dict | None = None
        self.lost = threading.Event()

    # ---------------------------------------------------------------- writes
    def _write(self, events: list[tuple[str, dict]], progress: bool = True) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id}: lease lost")
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                self._write_once(events, progress)
                break
            except OperationalError as exc:
                # Postgres ended this transaction to break a lock cycle (SQLSTATE 40P01): nothing of it
                # was committed, so it is written again (a progress write must not fail the job)
                if getattr(getattr(exc, "orig", None), "sqlstate", None) != "40P01" or attempt == DEADLOCK_RETRIES:
                    raise
                log.warning("job %s: progress write was a deadlock victim; retrying (%d)", self.job_id, attempt + 1)
                time.sleep(0.05 * (attempt + 1))
        self._last_flush = time.monotonic()
        self._dirty = False

    def _write_once(self, events: list[tuple[str, dict]], progress: bool) -> None:
        with session_scope() as db:
            chain = None
            if progress and self.parent_id is not None:
                chain = {"stage": f"{self.progress.get('stage')}", "done": self.progress.get("done"),
                         "total": self.progress.get("total"), "job_id": self.job_id, "kind": self.kind,
                         "chain_step": self.seq, "chain_steps": self.chain_len}
                for key in ("loss", "l_attack", "l_maintain", "alpha", "step"):
                    if key in self.progress:
                        chain[key] = self.progress[key]
                # the chain parent's row first: request_cancel locks a parent before its children, and
                # the opposite order here deadlocked with it (a sweep cancelled as its first scan started)
                db.execute(update(Job).where(Job.id == self.parent_id).values(progress=clean_json(chain)))
            values: dict[str, Any] = {"heartbeat_at": utcnow()}
            if progress:
                values["progress"] = clean_json(self.progress)
            res = db.execute(update(Job).where(Job.id == self.job_id, Job.lease == self.lease,
                                               Job.status == "running").values(**values))
            if res.rowcount != 1:
                self.lost.set()
                raise LeaseLost(f"job {self.job_id} is no longer held by this runner")
            for type_, data in events:
                db.add(JobEvent(job_id=self.job_id, type=type_, data=clean_json(data)))
            if chain is not None:
                for type_, data in events:
                    if type_ == "progress":
                        db.add(JobEvent(job_id=self.parent_id, type="progress", data=clean_json(chain)))

    def flush(self, force: bool = False) -> None:
        if self._dirty and (force or time.monotonic() - self._last_flush >= self.settings.progress_interval):
            self._write([("progress", dict(self.progress))])

    # ---------------------------------------------------------------- Reporter protocol
    def stage(self, name: str, total: int | None = None) -> None:
        self.flush(force=True)
        self.progress = {"stage": name, "done": 0, "total": total}
        self._dirty = True
        self._write([("progress", dict(self.progress))])

    def advance(self, done: int, total: int | None = None, **info: Any) -> None:
        self._advances.append((time.time(), int(done)))
        self.progress = {"stage": self.progress.get("stage"), "done": int(done),
                         "total": total if total is not None else self.progress.get("total"),
                         **{k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) or v is None}}
        self._dirty = True
        if total is not None and done >= total:
            self.flush(force=True)
        else:
            self.flush()

    def log(self, message: str, **info: Any) -> None:
        self.flush(force=True)
        self._write([("log", {"message": message, **info})], progress=False)

    def cancelled(self) -> bool:
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id}: lease lost")
        with session_scope() as db:
            row = db.execute(select(Job.cancel_requested, Job.cancel_requested_at, Job.lease)
                             .where(Job.id == self.job_id)).one_or_none()
        if row is None or row.lease != self.lease:
            self.lost.set()
            raise LeaseLost(f"job {self.job_id} is no longer held by this runner")
        if row.cancel_requested:
            if self.cancel_info is None:
                self.cancel_info = self._cancel_info(row.cancel_requested_at)
            return True
        return False

    def _cancel_info(self, requested_at: datetime | None) -> dict:
        """How far the work went after the request: steps completed after it (≤ 1 expected)."""
        t_req = requested_at.timestamp() if requested_at else time.time()
        after = sum(1 for t, _ in self._advances if t > t_req)
        last = self._advances[-1][1] if self._advances else 0
        return {"stage": self.progress.get("stage"), "stopped_at": last, "advances_after_request": after,
                "requested_at": requested_at.isoformat() if requested_at else None,
                "observed_at": time.time(), "recent_advances": [[t, s] for t, s in list(self._advances)[-20:]]}


class Heartbeat:
    """Beats ``heartbeat_at`` every ``interval`` s from a thread; sets ``lost`` if the lease is gone."""

    def __init__(self, job_id: int, lease: str, interval: float, lost: threading.Event) -> None:
        self.job_id, self.lease, self.interval, self.lost = job_id, lease, interval, lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with session_scope() as db:
                    res = db.execute(update(Job).where(Job.id == self.job_id, Job.lease == self.lease,
                                                       Job.status == "running").values(heartbeat_at=utcnow()))
                    if res.rowcount != 1:
                        self.lost.set()
                        return
            except Exception as exc:  # DB blip: try again next beat
                log.warning("heartbeat of job %s failed: %s", self.job_id, exc)


class JobContext:
    def __init__(self, job: Job, lease: str, settings: Settings, store: ArtifactStore, worker: str,
                 chain_len: int = 4) -> None:
        self.job_id = job.id
        self.kind = job.kind
        self.owner_id = job.owner_id
        self.run_id = job.run_id
        self.parent_id = job.parent_id
        self.attempt = job.attempts
        self.lease = lease
        self.settings = settings
        self.store = store
        self.worker = worker
        self.reporter = DBReporter(job.id, lease, job.parent_id, job.seq, job.kind, settings, chain_len)
        self.work_dir = settings.work_dir / f"job-{job.id}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._device: str | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope() as db:
            yield db

    @property
    def device(self) -> str:
        if self._device is None:
            dev = self.settings.device
            if dev == "auto":
                import torch  # inside the worker child only

                dev = "cuda" if torch.cuda.is_available() else "cpu"
            self._device = dev
        return self._device

    @property
    def cache_dir(self) -> Path:
        return self.settings.engine_cache_dir

    def log(self, message: str, **info: Any) -> None:
        self.reporter.log(message, **info)

    def check_cancel(self) -> None:
        from fvaudit.engine.progress import Cancelled

        if self.reporter.cancelled():
            raise Cancelled()


def worker_name(prefix: str) -> str:
    import socket

    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"
