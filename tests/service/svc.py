"""Helpers of the service tests: the real stack on this machine, started by the test session.

* Postgres: a fresh database on 127.0.0.1:5432 (created here, dropped at the end);
* Redis: a ``redis-server`` process of its own on a free port (so the restart test
  restarts only it; no persistence, like the machine's Redis);
* the API: ``fvaudit serve`` (uvicorn) in a subprocess, talked to over HTTP;
* a Celery worker: ``fvaudit worker`` (prefork, concurrency 1) in its own process group,
  so a test can SIGKILL it mid-job.

No eager mode, no SQLite here (the embedded default has its own test module, which
says so). Jobs run on the demo CNN with small image sets (1500 train / 400 val).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PG_ADMIN = os.environ.get("FVAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TRAIN_LIMIT, VAL_LIMIT = 1500, 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# ---------------------------------------------------------------- Postgres

def _pg_connect(dbname: str | None = None):
    import psycopg

    url = PG_ADMIN if dbname is None else PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}"
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        # trust auth as the OS user (root) when there is no "postgres" role
        return psycopg.connect(url.replace("postgres@", ""), autocommit=True, connect_timeout=5)


def create_database(prefix: str = "fvaudit_svc") -> tuple[str, str]:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        user = conn.info.user
    return name, f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    try:
        with _pg_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # leave it; names are unique
        print(f"could not drop test database {name}: {exc}", file=sys.stderr)


# ---------------------------------------------------------------- embedded mode, in this process

@contextlib.contextmanager
def embedded_db(data_dir: Path, monkeypatch):
    """Settings of the embedded default (SQLite under ``data_dir``, no broker), migrated, for
    tests that drive the local worker's loop (``local_worker.main(once=True)``) in this process."""
    from fvaudit.config import reset_settings
    from fvaudit.db import migrate
    from fvaudit.db.session import dispose_all

    for k in list(os.environ):
        if k.startswith("FVAUDIT_") and k != "FVAUDIT_CACHE_DIR":
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FVAUDIT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FVAUDIT_DEVICE", "cpu")
    reset_settings()
    dispose_all()
    try:
        migrate.upgrade()
        yield
    finally:
        dispose_all()
        reset_settings()


# ---------------------------------------------------------------- Redis

class RedisServer:
    """A redis-server of the test session's own (no persistence: a restart loses every message)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_until(self.ping, 20, "redis-server")

    def ping(self) -> bool:
        import redis

        r = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(r.ping())
        finally:
            r.close()

    def client(self):
        import redis

        return redis.Redis(port=self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


# ---------------------------------------------------------------- processes

class Proc:
    """A subprocess in its own process group, with a log file."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        fh = open(self.log, "ab")
        fh.write(f"\n===== start {self.name}: {' '.join(self.args)}\n".encode())
        fh.flush()
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive():
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP the whole process group: the work in it stands still (heartbeats too: keep it short)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill9(self) -> None:
        """SIGKILL the whole process group (the Celery parent and its pool child)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class Stack:
    """API + worker against Postgres and Redis, plus HTTP helpers."""

    def __init__(self, tmp: Path, db_url: str, redis: RedisServer) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.redis = redis
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.allowed = tmp / "allowed"
        self.allowed.mkdir(parents=True, exist_ok=True)
        self.queue = f"fvaudit-test-{uuid.uuid4().hex[:6]}"
        self.env = {**os.environ,
                    "PYTHONPATH": str(ROOT / "backend") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "FVAUDIT_DATABASE_URL": db_url, "FVAUDIT_BROKER_URL": redis.url,
                    "FVAUDIT_DATA_DIR": str(tmp / "data"), "FVAUDIT_CACHE_DIR": str(tmp / "cache"),
                    "FVAUDIT_ALLOWED_ROOTS": str(self.allowed), "FVAUDIT_CELERY_QUEUE": self.queue,
                    "FVAUDIT_HEARTBEAT_INTERVAL": "1", "FVAUDIT_HEARTBEAT_TIMEOUT": "8",
                    "FVAUDIT_REAPER_INTERVAL": "1", "FVAUDIT_REQUEUE_AFTER": "3", "FVAUDIT_PROGRESS_INTERVAL": "0.2",
                    "FVAUDIT_MAX_UPLOAD_MB": "3", "FVAUDIT_DEVICE": "cpu",
                    "FVAUDIT_TORCH_THREADS": os.environ.get("FVAUDIT_TORCH_THREADS", "2"),
                    "FVAUDIT_TOKEN_CACHE_SECONDS": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "FVAUDIT_SECRET_KEY": f"test-secret-{uuid.uuid4().hex}"}
        for k in ("DATABASE_URL", "BROKER_URL", "CELERY_BROKER_URL", "DATA_DIR"):
            self.env.pop(k, None)
        self.api = Proc("api", [PY, "-m", "fvaudit.cli", "serve", "--port", str(self.port), "--no-upgrade",
                                "--log-level", "warning"], self.env, tmp / "api.log")
        self.workers: list[Proc] = []
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, int] = {}

    # -- processes
    def cli(self, *args: str, timeout: float = 120) -> str:
        res = subprocess.run([PY, "-m", "fvaudit.cli", *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                             timeout=timeout)
        assert res.returncode == 0, f"fvaudit {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def start_api(self) -> None:
        self.api.start()
        wait_until(lambda: httpx.get(self.base + "/api/v1/health", timeout=2).status_code == 200, 60,
                   "the API (log: " + self.api.tail(2000) + ")")

    def start_worker(self) -> Proc:
        n = len(self.workers) + 1
        w = Proc(f"worker{n}", [PY, "-m", "fvaudit.cli", "worker", "--hostname", f"w{n}-{self.queue}@%h",
                                "--loglevel", "INFO"], self.env, self.tmp / f"worker{n}.log").start()
        self.workers.append(w)
        wait_until(lambda: "ready." in w.tail(20000) or (not w.alive() and RuntimeError(w.tail())), 90,
                   f"celery worker {n}")
        assert w.alive(), w.tail()
        return w

    @property
    def worker(self) -> Proc:
        return self.workers[-1]

    @staticmethod
    def until(pred, timeout: float, what: str, interval: float = 0.2):
        return wait_until(pred, timeout, what, interval)

    # -- HTTP
    def h(self, who: str | None = "admin") -> dict:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def get(self, path: str, who: str | None = "admin", **kw) -> httpx.Response:
        return httpx.get(self.base + path, headers={**self.h(who), **kw.pop("headers", {})}, timeout=60, **kw)

    def post(self, path: str, json=None, who: str | None = "admin", **kw) -> httpx.Response:
        return httpx.post(self.base + path, json=json, headers={**self.h(who), **kw.pop("headers", {})}, timeout=120,
                          **kw)

    def delete(self, path: str, who: str | None = "admin", **kw) -> httpx.Response:
        return httpx.delete(self.base + path, headers={**self.h(who), **kw.pop("headers", {})}, timeout=60, **kw)

    def job(self, jid: int, who: str = "admin") -> dict:
        r = self.get(f"/api/v1/jobs/{jid}", who)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, jid: int, statuses=("succeeded", "failed", "cancelled"), timeout: float = 240,
                 who: str = "admin") -> dict:
        def done():
            j = self.job(jid, who)
            return j if j["status"] in statuses else None

        try:
            return wait_until(done, timeout, f"job {jid} to reach {statuses}", interval=0.3)
        except TimeoutError:
            raise TimeoutError(f"job {jid}: {self.job(jid, who)}\nworker log:\n"
                               + (self.worker.tail() if self.workers else "") + "\napi log:\n" + self.api.tail())

    def wait_progress(self, jid: int, pred, timeout: float = 120) -> dict:
        return wait_until(lambda: (lambda j: j if pred(j) else None)(self.job(jid)), timeout,
                          f"progress of job {jid}", interval=0.1)

    def register_folder(self, name: str, folder, who: str = "admin", **body) -> dict:
        """POST a folder image set (202: indexed by a register_images job), wait for the job; the set's JSON."""
        r = self.post("/api/v1/image-sets", {"name": name, "source": str(folder), **body}, who)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "indexing" and r.json()["job"]["kind"] == "register_images", r.text
        self.wait_job(r.json()["job"]["id"], who=who)
        s = self.get(f"/api/v1/image-sets/{r.json()['id']}", who)
        assert s.status_code == 200, s.text
        return s.json()

    def log_events(self, jid: int) -> list[dict]:
        r = self.get(f"/api/v1/jobs/{jid}/log")
        assert r.status_code == 200, r.text
        return r.json()

    def audit_spec(self, control: bool = False, visualize: bool = False, **attack) -> dict:
        """A small audit of relu1; the α = 0 control and the synthetic step only when asked (tiny renders)."""
        a = {"kind": "push_down", "layers": ["relu1"], "steps": 20, "batch_size": 64, "eval_every": 10,
             "eval_size": 400, "lr": 1e-3, "checkpoint_every": 10, **attack}
        return {"model_id": self.ids["model"], "train_set_id": self.ids["train"], "val_set_id": self.ids["val"],
                "attack": a, "k_clip": 5, "embedder": "efficientnet-lite0", "scan_batch_size": 256,
                "control": control, "visualize": visualize, "n_synth": 2, "synth_steps": 8}

    def attack_spec(self, **attack) -> dict:
        a = {"kind": "push_down", "layers": ["relu1"], "steps": 100_000, "batch_size": 64, "eval_every": 1000,
             "eval_size": 200, "lr": 1e-4, "checkpoint_every": 5, **attack}
        return {"model_id": self.ids["model"], "train_set_id": self.ids["train"], "val_set_id": self.ids["val"],
                "attack": a}


