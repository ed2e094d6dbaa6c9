"""The service the API benchmarks drive (bench/api_latency.py, bench/soak.py).

``bench_service()`` creates a database of its own on 127.0.0.1:5432 (dropped at the
end) holding the demo model, two Fashion-MNIST image sets and one finished run whose
rows have the shape the metrics job writes (``fvaudit.db.seed.synthetic_run``: 128
units of relu3, top-10 before/after on a train and a validation set, every metric,
nearest units), starts ``fvaudit serve`` (service mode, one uvicorn process, Redis
at 127.0.0.1:6379 unless told otherwise) and yields what the clients need.

``classify(exc_or_status)`` names a failed request by kind (``ReadError``,
``RemoteProtocolError``, ``http_500`` ...): the benchmarks count failures by kind
instead of stopping at the first.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
PG_ADMIN = os.environ.get("FVAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
LAYER, UNITS = "relu3", 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg(sql: str) -> str:
    import psycopg

    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        conn = psycopg.connect(PG_ADMIN.replace("postgres@", ""), autocommit=True, connect_timeout=5)
    with conn:
        cur = conn.execute(sql)
        return conn.info.user if cur.description is None else str(cur.fetchone()[0])


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def classify(outcome: BaseException | int) -> str:
    """A failed request's kind: the httpx exception class, or ``http_<status>``."""
    if isinstance(outcome, int):
        return f"http_{outcome}"
    return type(outcome).__name__


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (MiB), from /proc; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@dataclass
class Service:
    base: str
    headers: dict
    run_id: int
    pid: int
    log: Path

    @property
    def units(self) -> int:
        return UNITS

    def unit_path(self, unit: int) -> str:
        return f"/api/v1/runs/{self.run_id}/layers/{LAYER}/units/{unit}"

    def table_path(self, page: int) -> str:
        return f"/api/v1/runs/{self.run_id}/layers/{LAYER}/units?sort=clip_delta&order=desc&page={page}&page_size=50"


@contextlib.contextmanager
def bench_service(broker: str = "redis://127.0.0.1:6379/0", extra_env: dict | None = None,
                  log_level: str = "warning", embedded: bool = False,
                  command: list[str] | None = None) -> Iterator[Service]:
    """``embedded``: the default mode of ``fvaudit serve`` instead (SQLite under the data
    directory, no broker, its local worker processes); ``command`` replaces the server's
    ``python -m fvaudit.cli`` (e.g. a wrapper that traces its memory)."""
    db = f"fvaudit_bench_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    user = None if embedded else pg(f'CREATE DATABASE "{db}"')
    data = Path(os.environ.get("TMPDIR", "/tmp")) / db
    port = free_port()
    db_env = ({"FVAUDIT_DATABASE_URL": f"sqlite:///{data / 'fvaudit.db'}", "FVAUDIT_BROKER_URL": "none"}
              if embedded else
              {"FVAUDIT_DATABASE_URL": f"postgresql+psycopg://{user}@127.0.0.1:5432/{db}", "FVAUDIT_BROKER_URL": broker})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend"), **db_env,
           "FVAUDIT_CELERY_QUEUE": f"bench-{db}", "FVAUDIT_DATA_DIR": str(data),
           "FVAUDIT_CACHE_DIR": os.environ.get("FVAUDIT_CACHE_DIR", str(ROOT / ".fvaudit-cache" / "bench")),
           "FVAUDIT_REAPER_INTERVAL": "5", "HF_HUB_OFFLINE": "1", "FVAUDIT_SECRET_KEY": uuid.uuid4().hex,
           **(extra_env or {})}
    for k in ("DATABASE_URL", "BROKER_URL", "CELERY_BROKER_URL", "DATA_DIR"):
        env.pop(k, None)
    api = None
    data.mkdir(parents=True, exist_ok=True)
    log = data / "api.log"
    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("FVAUDIT_")})
        from fvaudit.config import reset_settings

        reset_settings()
        from fvaudit.db import migrate

        migrate.upgrade()
        from fvaudit.registration import register_image_set, register_model
        from fvaudit.api.security import create_token
        from fvaudit.db.seed import synthetic_run
        from fvaudit.db.session import dispose_all, session_scope

        with session_scope() as s:
            owner, token = create_token(s, "bench", admin=False)
            model = register_model(s, owner.id, "demo", "fmnist-cnn")
            train = register_image_set(s, owner.id, "train", "fashion-mnist:train", 10000)
            val = register_image_set(s, owner.id, "val", "fashion-mnist:test", 2000)
            run_id = synthetic_run(s, owner.id, model.id, train, val, {LAYER: UNITS}).id
        dispose_all()
        api = subprocess.Popen((command or [sys.executable, "-m", "fvaudit.cli"])
                               + ["serve", "--port", str(port), "--no-upgrade", "--log-level", log_level],
                               env=env, cwd=ROOT, start_new_session=True,
                               stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + 300        # a loaded machine (or tracemalloc) starts slowly
        while True:
            try:
                if httpx.get(base + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if api.poll() is not None:
                raise RuntimeError(f"the API exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer /health within 300 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Service(base, {"Authorization": f"Bearer {token}"}, run_id, api.pid, log)
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        try:
            from fvaudit.db.session import dispose_all

            dispose_all()
        except Exception:
            pass
        os.environ.clear()
        os.environ.update(saved)
        if not embedded:
            pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
