"""Fixtures of the service tests (helpers in svc.py): Postgres database, Redis, API and
Celery worker processes started by the test session; see svc.py for what runs where."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from svc import TRAIN_LIMIT, VAL_LIMIT, RedisServer, Stack, create_database, drop_database  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("stack")
    name, url = create_database()
    st = Stack(tmp, url, redis_server)
    try:
        st.cli("db", "upgrade")
        for user, admin in (("admin", True), ("alice", False), ("bob", False)):
            args = ["token", "create", "--user", user, "--quiet"] + (["--admin"] if admin else [])
            st.tokens[user] = st.cli(*args).strip().splitlines()[-1]
        st.start_api()
        st.start_worker()
        r = st.post("/api/v1/models", {"name": "demo cnn", "registry_name": "fmnist-cnn"})
        assert r.status_code == 201, r.text
        st.ids["model"] = r.json()["id"]
        for role, split, limit in (("train", "train", TRAIN_LIMIT), ("val", "test", VAL_LIMIT)):
            r = st.post("/api/v1/image-sets", {"name": f"fmnist {split}", "source": f"fashion-mnist:{split}",
                                               "limit": limit})
            assert r.status_code == 201, r.text
            st.ids[role] = r.json()["id"]
        yield st
    finally:
        for w in st.workers:
            w.stop(signal.SIGQUIT, timeout=10)
        st.api.stop()
        from fvaudit.db.session import dispose_all

        dispose_all()
        drop_database(name)


@pytest.fixture(scope="session")
def audit_run(stack):
    """One finished audit chain (scan → push-down → scan → metrics), shared by read-only tests."""
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": stack.audit_spec()}, who="alice")
    assert r.status_code == 201, r.text
    job = stack.wait_job(r.json()["id"], who="alice")
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture
def db_env(stack, monkeypatch):
    """Point this (test) process's settings at the stack's database, for direct DB checks."""
    from fvaudit.config import reset_settings
    from fvaudit.db.session import dispose_all

    for k, v in stack.env.items():
        if k.startswith("FVAUDIT_"):
            monkeypatch.setenv(k, v)
    reset_settings()
    yield stack
    dispose_all()
    reset_settings()
