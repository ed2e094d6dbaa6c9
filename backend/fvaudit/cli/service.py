"""Service commands of the ``fvaudit`` CLI: serve, worker, db, token, reaper, demo, setup-demo.

``cli.py`` calls :func:`register` with its subparsers; each command is a handler
``(args) -> int``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path



def _settings():
    from fvaudit.config import get_settings, reset_settings

    reset_settings()
    return get_settings()


# ---------------------------------------------------------------- db / token

def cmd_db(args) -> int:
    from fvaudit.db import migrate

    s = _settings()
    if args.db_command == "upgrade":
        migrate.upgrade(s.db_url, args.revision)
        print(f"database {_safe_url(s.db_url)} at revision {migrate.current(s.db_url)}")
        return 0
    if args.db_command == "current":
        print(migrate.current(s.db_url) or "(empty)")
        return 0
    return 2


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


def cmd_token(args) -> int:
    from fvaudit.api.security import create_token
    from fvaudit.db.session import session_scope

    _settings()
    if args.token_command == "create":
        with session_scope() as db:
            user, token = create_token(db, args.user, admin=args.admin, label=args.name or "", token=args.token)
            who = f"{user.name}{' (admin)' if user.is_admin else ''}"
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(token + "\n")
            os.chmod(args.out, 0o600)
        if args.quiet:
            print(token)
        else:
            print(f"API token for {who} (shown once; send it as 'Authorization: Bearer <token>'):\n{token}")
        return 0
    if args.token_command == "revoke":
        from sqlalchemy import update

        from fvaudit.api.security import hash_token
        from fvaudit.db.tables import APIToken, utcnow

        with session_scope() as db:
            n = db.execute(update(APIToken).where(APIToken.token_hash == hash_token(args.token))
                           .values(revoked_at=utcnow())).rowcount
        print("revoked" if n else "no such token")
        return 0 if n else 1
    return 2


# ---------------------------------------------------------------- worker / reaper

def cmd_worker(args) -> int:
    s = _settings()
    if s.broker_url:
        from fvaudit.worker import main

        extra = []
        if args.loglevel:
            extra += [f"--loglevel={args.loglevel}"]
        if args.hostname:
            extra += ["-n", args.hostname]
        main(extra)
        return 0
    from fvaudit.local_worker import main as local_main

    return local_main(once=args.once)


def cmd_reaper(args) -> int:
    """The job reaper as its own process (:mod:`fvaudit.jobs.reaper`; the API runs it as a thread too)."""
    import logging
    import time

    from fvaudit.jobs.reaper import reap_once

    _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    while True:
        res = reap_once(max_attempts=args.max_attempts)
        if args.once:
            print({k: v for k, v in res.items()})
            return 0
        if any(res.values()):
            logging.getLogger("fvaudit.reaper").info("%s", {k: v for k, v in res.items() if v})
        time.sleep(args.interval)


# ---------------------------------------------------------------- serve

def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the server dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def local_worker_plan(settings, cores: int | None = None) -> list[tuple[list[str], dict[str, str]]]:
    """The embedded mode's worker processes: (extra argv, extra env) of each.

    ``local_workers`` general workers (0 = auto: 2 on two or more cores), each with
    cores / N torch threads (an explicit ``torch_threads`` wins) so they share the machine
    rather than oversubscribe it, and one quick-lane worker for ``quick`` kinds with one thread;
    the general workers leave those to it, so an idle general worker never takes a folder's
    indexing that the quick lane exists for (and a busy one never holds it back).
    """
    cores = cores or os.cpu_count() or 1
    n = settings.local_workers or (2 if cores >= 2 else 1)
    threads = settings.torch_threads or max(1, cores // n)
    plan = [(["--general"], {"FVAUDIT_TORCH_THREADS": str(threads),
                  # DataLoader processes per job: the worker's share of the cores, not all of them
                  **({} if settings.loader_workers is not None else
                     {"FVAUDIT_LOADER_WORKERS": str(max(0, cores // n if cores // n > 1 else 0))})})
            for _ in range(n)]
    plan.append((["--quick"], {"FVAUDIT_TORCH_THREADS": "1"}))
    return plan


class LocalWorkerSupervisor:
    """Embedded mode: the ``python -m fvaudit.local_worker`` children of
    :func:`local_worker_plan`, each restarted if it dies."""

    def __init__(self, env: dict[str, str], plan: list[tuple[list[str], dict[str, str]]] | None = None) -> None:
        self.env = env
        self.plan = plan or [([], {})]
        self.procs: list[subprocess.Popen | None] = [None] * len(self.plan)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-worker-supervisor", daemon=True)

    def start(self) -> "LocalWorkerSupervisor":
        for i in range(len(self.plan)):
            self._spawn(i)
        self._thread.start()
        return self

    def _spawn(self, i: int) -> None:
        argv, extra = self.plan[i]
        # start_new_session: Ctrl-C in the terminal reaches the server only, which stops the
        # workers itself (SIGTERM): no second traceback from a child interrupted mid-job
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "fvaudit.local_worker", *argv],
                                         env={**self.env, **extra}, preexec_fn=_die_with_parent,
                                         start_new_session=True)

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None and not self._stop.is_set():
                    print(f"fvaudit: local worker exited ({proc.returncode}); restarting", file=sys.stderr)
                    time.sleep(backoff)
                    backoff = min(30.0, backoff * 2)
                    self._spawn(i)

    def stop(self) -> None:
        self._stop.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        for p in live:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def _serve(host: str, port: int, upgrade: bool = True, local_worker: bool = True, workers: int = 1,
           log_level: str = "info") -> int:
    import uvicorn

    s = _settings()
    if upgrade:
        from fvaudit.db import migrate

        migrate.upgrade(s.db_url)
    sup = None
    if s.mode == "embedded" and local_worker:
        env = dict(os.environ)
        env["FVAUDIT_DATABASE_URL"] = s.db_url
        env["FVAUDIT_DATA_DIR"] = str(s.data_dir)
        env["FVAUDIT_BROKER_URL"] = "none"
        sup = LocalWorkerSupervisor(env, local_worker_plan(s)).start()
    try:
        if workers > 1:
            uvicorn.run("fvaudit.api.app:app", host=host, port=port, workers=workers, log_level=log_level,
                        timeout_keep_alive=s.keep_alive_seconds)
        else:
            from fvaudit.api.app import create_app

            # stop the local worker in the app's shutdown: uvicorn re-raises SIGTERM afterwards
            uvicorn.run(create_app(on_shutdown=sup.stop if sup else None), host=host, port=port,
                        log_level=log_level, timeout_keep_alive=s.keep_alive_seconds)
    finally:
        if sup is not None:
            sup.stop()
    return 0


def cmd_serve(args) -> int:
    return _serve(args.host, args.port, upgrade=not args.no_upgrade, local_worker=not args.no_worker,
                  workers=args.workers, log_level=args.log_level)


# ---------------------------------------------------------------- demo

def setup_demo(limit_train: int | None, limit_val: int | None, user: str = "admin") -> dict:
    """Register the demo model and the Fashion-MNIST sets (idempotent by name); returns ids."""
    from sqlalchemy import select

    from fvaudit.registration import register_image_set, register_model
    from fvaudit.db.tables import ImageSet, Model, User
    from fvaudit.db.session import session_scope

    def set_name(split: str, limit: int | None) -> str:
        return f"Fashion-MNIST {split}" + (f" ({limit})" if limit else "")

    with session_scope() as db:
        owner = db.scalar(select(User).where(User.name == user))
        owner_id = owner.id if owner else None
        model = db.scalar(select(Model).where(Model.registry_name == "fmnist-cnn", Model.source == "registry")
                          .order_by(Model.id))
        if model is None:
            model = register_model(db, owner_id, "fmnist-cnn (demo)", "fmnist-cnn")
        ids = {"model_id": model.id}
        for role, split, limit in (("train_set_id", "train", limit_train), ("val_set_id", "test", limit_val)):
            name = set_name(split, limit)
            row = db.scalar(select(ImageSet).where(ImageSet.name == name).order_by(ImageSet.id))
            if row is None:
                row = register_image_set(db, owner_id, name, f"fashion-mnist:{split}", limit)
            ids[role] = row.id
    return ids


def demo_settings() -> dict:
    """The demo audit's settings (``assets/demo_audit.json``): read by ``fvaudit demo``,
    ``fvaudit setup-demo`` and the e2e test of the README's demo path, so they cannot drift."""
    from importlib.resources import files

    return json.loads(files("fvaudit").joinpath("assets/demo_audit.json").read_text())


def demo_audit_spec(ids: dict, steps: int | None = None, synth_steps: int | None = None,
                    n_synth: int | None = None) -> dict:
    """The demo audit: push-down of every unit of conv3, with its α = 0 control and synthetic
    visualizations, as ``demo_settings()`` gives it (a value given here overrides it). The
    renders are shorter than the API's default (256 steps) so a CPU demo finishes in minutes."""
    d = demo_settings()
    attack = {**d["attack"], "layers": [d["layer"]]}
    if steps is not None:
        attack["steps"] = steps
    return {"name": f"demo: conv3 push-down ({attack['steps']} steps)", "model_id": ids["model_id"],
            "train_set_id": ids["train_set_id"], "val_set_id": ids["val_set_id"], "attack": attack,
            "k_clip": d["k_clip"], "embedder": d["embedder"], "control": d["control"], "visualize": d["visualize"],
            "synth_steps": synth_steps if synth_steps is not None else d["synth_steps"],
            "n_synth": n_synth if n_synth is not None else d["n_synth"]}


def demo_chain_text() -> str:
    """The demo audit's steps in words, from the audit kind's declared steps (never a hand-kept list:
    the banner once said "scan → push-down → scan → metrics" for a 9-step chain)."""
    from fvaudit.jobs.registry import get_kind

    steps = get_kind("audit").steps
    main = [s.label for s in steps if not s.key.startswith("control")]
    control = [s.label for s in steps if s.key.startswith("control")]
    return f"{len(steps)} steps: " + " → ".join(main) + "; beside it " + " → ".join(control)


def queue_audit(user_name: str, spec: dict) -> int:
    """Launch an audit as ``user_name``, the way ``POST /jobs`` does (:func:`fvaudit.jobs.create.submit`)."""
    from sqlalchemy import select

    from fvaudit.db.tables import User
    from fvaudit.db.session import session_scope
    from fvaudit.jobs.create import submit

    with session_scope() as db:
        user_id = db.scalar(select(User.id).where(User.name == user_name))
    return submit(user_id, "audit", spec)


def _admin_token(data_dir: Path | None = None, token: str | None = None, user: str = "admin") -> str:
    """A known admin token: the given one, the one saved in DATA_DIR/admin_token, or a new one."""
    from fvaudit.api.security import TOKENS, create_token, hash_token
    from fvaudit.db.tables import APIToken
    from fvaudit.db.session import session_scope
    from sqlalchemy import select

    saved = (data_dir / "admin_token") if data_dir else None
    if token is None and saved is not None and saved.exists():
        candidate = saved.read_text().strip()
        with session_scope() as db:
            if db.scalar(select(APIToken).where(APIToken.token_hash == hash_token(candidate),
                                                APIToken.revoked_at.is_(None))) is not None:
                token = candidate
    with session_scope() as db:
        _, token = create_token(db, user, admin=True, label="admin", token=token)
    TOKENS.clear()
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(token + "\n")
        os.chmod(saved, 0o600)
    return token


def cmd_setup_demo(args) -> int:
    from fvaudit.db import migrate

    s = _settings()
    migrate.upgrade(s.db_url)
    out: dict = {}
    if args.admin_token_file or args.admin_token:
        tok = _admin_token(None, args.admin_token)
        if args.admin_token_file:
            Path(args.admin_token_file).parent.mkdir(parents=True, exist_ok=True)
            Path(args.admin_token_file).write_text(tok + "\n")
        out["admin_token_file"] = args.admin_token_file
    else:
        from fvaudit.db.session import session_scope

        with session_scope() as db:
            from sqlalchemy import select

            from fvaudit.db.tables import User

            if db.scalar(select(User).where(User.name == "admin")) is None:
                db.add(User(name="admin", is_admin=True))
    ids = setup_demo(args.limit_train or None, args.limit_val or None)
    out.update(ids)
    if args.queue_audit:
        out["audit_job_id"] = queue_audit("admin", demo_audit_spec(ids, args.steps, synth_steps=args.synth_steps, n_synth=args.n_synth))
    print(json.dumps(out))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    return 0


def cmd_demo(args) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FVAUDIT_DATA_DIR"] = str(data_dir)
    os.environ["FVAUDIT_DATABASE_URL"] = f"sqlite:///{data_dir / 'fvaudit.db'}"
    os.environ["FVAUDIT_BROKER_URL"] = "none"
    os.environ.setdefault("FVAUDIT_CACHE_DIR", str(data_dir / "cache"))
    s = _settings()
    from fvaudit.db import migrate

    print(f"fvaudit demo: embedded mode, data in {data_dir}", flush=True)
    migrate.upgrade(s.db_url)
    token = _admin_token(data_dir, args.token)
    print("registering the demo model and Fashion-MNIST ...", flush=True)
    ids = setup_demo(args.limit_train or None, args.limit_val or None)
    job_id = None
    if not args.no_audit:
        from sqlalchemy import select

        from fvaudit.db.tables import Job
        from fvaudit.db.session import session_scope

        with session_scope() as db:
            existing = db.scalar(select(Job.id).where(Job.kind == "audit", Job.status.in_(("queued", "running",
                                                                                              "succeeded"))))
        if existing is None or args.requeue:
            job_id = queue_audit("admin", demo_audit_spec(ids, args.steps, synth_steps=args.synth_steps, n_synth=args.n_synth))
        else:
            job_id = existing
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{args.port}/"
    print("\n" + "=" * 72)
    print(f"  fvaudit is at {url}?token={token}")
    print(f"  API docs:      {url}api/v1/docs")
    print(f"  admin token:   {token}   (also in {data_dir / 'admin_token'})")
    if job_id:
        print(f"  demo audit:    job {job_id}, {demo_chain_text()}")
        print(f"                 follow it at {url}jobs/{job_id}")
    print("  Ctrl-C stops the server and the local worker.")
    print("=" * 72 + "\n", flush=True)
    return _serve(args.host, args.port, upgrade=False, local_worker=True)


# ---------------------------------------------------------------- registration

def register(subparsers) -> dict:
    sp = subparsers.add_parser("serve", help="HTTP API (+ a local worker in embedded mode)")
    sp.add_argument("--host", default=os.environ.get("FVAUDIT_HOST", "127.0.0.1"))
    sp.add_argument("--port", type=int, default=int(os.environ.get("FVAUDIT_PORT", "8000")))
    sp.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    sp.add_argument("--no-worker", action="store_true", help="embedded mode: do not start the local worker")
    sp.add_argument("--no-upgrade", action="store_true", help="do not apply migrations on start")
    sp.add_argument("--log-level", default="info")

    sp = subparsers.add_parser("worker", help="run jobs: a Celery worker (service mode) or the local worker")
    sp.add_argument("--loglevel", default=None)
    sp.add_argument("--hostname", default=None, help="Celery node name (-n)")
    sp.add_argument("--once", action="store_true", help="local worker: run queued jobs, then exit")

    sp = subparsers.add_parser("db", help="database migrations")
    dsub = sp.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("upgrade", help="apply migrations (alembic upgrade)")
    up.add_argument("--revision", default="head")
    dsub.add_parser("current", help="print the current revision")

    sp = subparsers.add_parser("token", help="API tokens")
    tsub = sp.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create", help="create a user (if new) and an API token for it")
    c.add_argument("--user", default="admin")
    c.add_argument("--admin", action="store_true")
    c.add_argument("--name", help="a label for the token")
    c.add_argument("--token", help="use this token value (16-128 chars of A-Za-z0-9_-) instead of a random one")
    c.add_argument("--out", help="also write the token to this file (mode 600)")
    c.add_argument("--quiet", action="store_true", help="print only the token")
    r = tsub.add_parser("revoke", help="revoke a token")
    r.add_argument("token")

    sp = subparsers.add_parser("reaper", help="requeue or fail jobs of dead workers; re-send lost wake-ups")
    sp.add_argument("--interval", type=float, default=5.0)
    sp.add_argument("--once", action="store_true")
    sp.add_argument("--max-attempts", type=int, default=None)

    sp = subparsers.add_parser("demo", help="embedded server on the demo model + Fashion-MNIST, with a queued audit")
    sp.add_argument("--data-dir", default=os.environ.get("FVAUDIT_DEMO_DIR", "data/demo"))
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    demo = demo_settings()
    sp.add_argument("--limit-train", type=int, default=demo["train_limit"], help="training images (0 = all 60000)")
    sp.add_argument("--limit-val", type=int, default=demo["val_limit"], help="validation images (0 = all 10000)")
    sp.add_argument("--steps", type=int, default=None,
                    help=f"attack steps (default {demo['attack']['steps']}: assets/demo_audit.json)")
    sp.add_argument("--synth-steps", type=int, default=None,
                    help=f"steps of each synthetic visualization (default {demo['synth_steps']})")
    sp.add_argument("--n-synth", type=int, default=None,
                    help=f"synthetic visualizations (seeds) per unit (default {demo['n_synth']})")
    sp.add_argument("--token", help="admin token to use (default: saved one, or a new one)")
    sp.add_argument("--no-audit", action="store_true", help="do not queue the demo audit")
    sp.add_argument("--requeue", action="store_true", help="queue the demo audit even if one exists")

    sp = subparsers.add_parser("setup-demo", help="register the demo model and Fashion-MNIST sets (idempotent)")
    sp.add_argument("--limit-train", type=int, default=0)
    sp.add_argument("--limit-val", type=int, default=0)
    sp.add_argument("--admin-token", help="make this the admin token")
    sp.add_argument("--admin-token-file", help="write the admin token here")
    sp.add_argument("--queue-audit", action="store_true")
    sp.add_argument("--steps", type=int, default=None, help="attack steps (default: the demo's)")
    sp.add_argument("--synth-steps", type=int, default=None, help="steps of each synthetic visualization")
    sp.add_argument("--n-synth", type=int, default=None, help="synthetic visualizations (seeds) per unit")
    sp.add_argument("--json-out")

    return {"serve": cmd_serve, "worker": cmd_worker, "db": cmd_db, "token": cmd_token, "reaper": cmd_reaper,
            "demo": cmd_demo, "setup-demo": cmd_setup_demo}


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="fvaudit")
    cmds = register(p.add_subparsers(dest="command", required=True))
    a = p.parse_args()
    sys.exit(cmds[a.command](a))
