"""Alembic environment: fvaudit's models and settings; an advisory lock on Postgres.

The API, `fvaudit db upgrade` and `fvaudit demo` may start at the same time; on
Postgres a session-level advisory lock serialises them, so one applies the migrations
and the others find the schema at head.
"""
from __future__ import annotations

import sys
from pathlib import Path

from alembic import context
from sqlalchemy import text

_backend = Path(__file__).resolve().parent.parent / "backend"
if _backend.is_dir() and str(_backend) not in sys.path:
    sys.path.insert(0, str(_backend))

from fvaudit.db.tables import Base  # noqa: E402

config = context.config
target_metadata = Base.metadata
LOCK_ID = 0x6676_6175  # "fvau"


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from fvaudit.config import get_settings

    return get_settings().db_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        from fvaudit.db.session import get_engine

        connectable = get_engine(_url())
    with connectable.connect() as connection:
        is_pg = connection.dialect.name == "postgresql"
        if is_pg:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if is_pg:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
