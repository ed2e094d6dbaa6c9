"""Apply the Alembic migrations (top-level ``alembic/``) from any working directory."""
from __future__ import annotations

import os
from pathlib import Path

from fvaudit.config import REPO_ROOT


def alembic_dir() -> Path:
    """The migration scripts: $FVAUDIT_ALEMBIC_DIR, else <repo>/alembic next to the package."""
    env = os.environ.get("FVAUDIT_ALEMBIC_DIR")
    candidates = [Path(env)] if env else []
    candidates += [REPO_ROOT / "alembic", Path.cwd() / "alembic"]
    for c in candidates:
        if (c / "env.py").exists():
            return c.resolve()
    raise FileNotFoundError(
        "alembic migrations not found (looked in " + ", ".join(map(str, candidates))
        + "); set FVAUDIT_ALEMBIC_DIR to the repository's alembic/ folder")


def alembic_config(url: str | None = None):
    from alembic.config import Config

    from fvaudit.config import get_settings

    d = alembic_dir()
    ini = d.parent / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(d))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().db_url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from fvaudit.db.session import get_engine

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
