"""Engine and session factory, one per process (safe across Celery's fork)."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
_makers: dict[tuple[int, str], sessionmaker] = {}


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _rec):  # WAL: the API reads while the local worker writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return eng
    pool_size = int(os.environ.get("FVAUDIT_DB_POOL_SIZE", "10"))
    return create_engine(url, pool_size=pool_size, max_overflow=int(os.environ.get("FVAUDIT_DB_MAX_OVERFLOW", "20")),
                         pool_pre_ping=True, pool_recycle=1800)


def get_engine(url: str | None = None) -> Engine:
    if url is None:
        from fvaudit.config import get_settings

        url = get_settings().db_url
    key = (os.getpid(), url)
    eng = _engines.get(key)
    if eng is None:
        with _lock:
            eng = _engines.get(key)
            if eng is None:
                eng = _engines[key] = _make_engine(url)
    return eng


def sessionmaker_for(url: str | None = None) -> sessionmaker:
    eng = get_engine(url)
    key = (os.getpid(), str(eng.url))
    mk = _makers.get(key)
    if mk is None:
        mk = _makers[key] = sessionmaker(bind=eng, expire_on_commit=False)
    return mk


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    s = sessionmaker_for(url)()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def dispose_all() -> None:
    """Drop pooled connections (after fork, or in tests)."""
    with _lock:
        for (pid, _), eng in list(_engines.items()):
            if pid == os.getpid():
                eng.dispose()
        _engines.clear()
        _makers.clear()


def inserted(db: Session, row):
    """Add ``row`` and flush, so that it has its id (and its defaults) before the commit."""
    db.add(row)
    db.flush()
    return row
