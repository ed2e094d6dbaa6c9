"""Service settings (pydantic-settings), read from the environment.

Every setting has an ``FVAUDIT_`` name; the three that deployment tools name by
convention also work without the prefix: ``DATABASE_URL``, ``BROKER_URL`` (or
``CELERY_BROKER_URL``) and ``DATA_DIR``.

Mode: ``BROKER_URL`` unset (or ``none``) → **embedded**: the API and a local worker
process poll the same database (SQLite by default, under ``DATA_DIR``). ``BROKER_URL``
set → **service**: jobs are woken through Celery/Redis and run by ``fvaudit worker``.
"""
from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: repository root when the package is installed editable from a checkout (backend/fvaudit/..)
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "fvaudit"


class MissingSecretKey(RuntimeError):
    """Service mode without a usable FVAUDIT_SECRET_KEY (the message says what to set)."""


MIN_SECRET_KEY_LENGTH = 16
WEAK_SECRET_KEYS = {"change-me-in-production", "changeme", "change-me", "secret", "fvaudit", "dev", "test"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FVAUDIT_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default_factory=_default_data_dir,
                           validation_alias=AliasChoices("FVAUDIT_DATA_DIR", "DATA_DIR"))
    database_url: str | None = Field(None, validation_alias=AliasChoices("FVAUDIT_DATABASE_URL", "DATABASE_URL"))
    broker_url: str | None = Field(None, validation_alias=AliasChoices("FVAUDIT_BROKER_URL", "BROKER_URL",
                                                                         "CELERY_BROKER_URL"))
    #: folders under which image sets and server-side checkpoints may be registered (os.pathsep-separated)
    allowed_roots: str = ""
    #: engine caches (decoded images, embeddings, downloads); default DATA_DIR/cache
    cache_dir: Path | None = None
    #: signs image URLs; required in service mode (see require_secret_key), generated into
    #: DATA_DIR in the embedded default
    secret_key: str | None = None
    image_url_ttl: int = Field(6 * 3600, ge=60, le=30 * 24 * 3600)  # seconds a signed image URL stays valid
    #: seconds uvicorn keeps an idle keep-alive connection open; above every client pool's
    #: idle expiry (httpx 5 s, browsers ~60 s), so the server never closes a connection
    #: the client is about to reuse (the race behind the soak's connection resets)
    keep_alive_seconds: float = Field(75.0, gt=0, le=3600)
    public_url: str = ""                      # base URL for share links (default: the request's)
    frontend_dist: Path | None = None         # built dashboard; default <repo>/frontend/dist
    max_upload_mb: int = 1024
    #: the largest request body any other route reads (JSON), refused with 413 before it is
    #: parsed; 2 MiB holds the largest legitimate spec (100,000 decoy ids) twice over
    max_body_bytes: int = Field(2 * 2**20, ge=1024)
    device: str = "auto"                      # auto | cpu | cuda | cuda:N (resolved inside the worker child)
    torch_threads: int = 0                    # 0 = torch default

    # input pipeline (engine/data/pipeline.py), applied by the worker to every job that loads images
    loader_workers: int | None = Field(None, ge=0)   # DataLoader processes per job; None = the cores, 0 = in-process
    decode_cache: Literal["auto", "on", "off"] = "auto"  # auto: only when one full pass fits the bound
    decode_cache_gb: float = Field(4.0, ge=0)         # bound of the decode cache (model-input-size pixels), LRU
    scan_max_skipped_share: float = Field(0.01, ge=0, le=1)  # a scan fails when more images fail to decode
    amp: bool | None = None                   # bf16 autocast + channels_last; unset = on CUDA only

    # jobs
    heartbeat_interval: float = 10.0          # seconds between heartbeats of a running job
    heartbeat_timeout: float = 60.0           # a running job without heartbeat for this long is reaped
    max_attempts: int = 3                     # runs of one job (first + requeues after a lost worker)
    requeue_after: float = 30.0               # re-publish wake-ups of jobs queued this long (lost messages)
    reaper_interval: float = 5.0              # 0 disables the reaper thread inside the API process
    #: the API process's glibc malloc (api/memory.py: its RSS crept up under load): at most this
    #: many arenas (0 = glibc's default, 8 per core), and free pages returned every this many s (0 = never)
    malloc_arena_max: int = Field(2, ge=0, le=1024)
    malloc_trim_seconds: float = Field(60.0, ge=0)
    progress_interval: float = 0.5            # min seconds between progress writes of one job
    max_job_seconds: int = 3 * 24 * 3600      # the longest job we expect; the broker's visibility timeout exceeds it
    worker_max_tasks_per_child: int = 0       # 0 = unlimited; 1 = fresh child (clean GPU memory) per job
    local_poll_interval: float = 0.5          # embedded local worker's queue poll
    #: embedded mode: local worker processes taking any job (0 = auto: 2 on 2+ cores, else 1), each with
    #: cores/N torch threads, plus one quick-lane worker that takes only ``quick`` kinds (a folder's indexing),
    #: so a short job never waits behind a 10-minute render
    local_workers: int = Field(0, ge=0, le=64)
    celery_queue: str = "fvaudit"

    token_cache_seconds: float = 5.0

    @field_validator("broker_url", mode="before")
    @classmethod
    def _none_broker(cls, v):
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "off", "embedded")):
            return None
        return v

    # ------------------------------------------------------------------ derived
    @property
    def mode(self) -> str:
        return "service" if self.broker_url else "embedded"

    @property
    def db_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_dir / 'fvaudit.db'}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def engine_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else engine_cache_dir(self.data_dir)

    @property
    def decode_cache_bytes(self) -> int:
        return int(self.decode_cache_gb * 2**30)

    @property
    def roots(self) -> list[Path]:
        """Allowed roots, resolved; DATA_DIR/images is always one."""
        out = [(self.data_dir / "images").resolve()]
        for part in self.allowed_roots.split(os.pathsep):
            part = part.strip()
            if part:
                out.append(Path(part).expanduser().resolve())
        return out

    @property
    def dist_dir(self) -> Path:
        return self.frontend_dist or (REPO_ROOT / "frontend" / "dist")

    @property
    def visibility_timeout(self) -> int:
        """Redis visibility timeout: above the longest job, so no job is redelivered while it runs."""
        return int(self.max_job_seconds + 3600)

    def require_secret_key(self) -> None:
        """Refuse to serve in service mode without a real secret key (raises MissingSecretKey).

        The key signs image URLs; several API processes (and restarts) must share it, and a
        key everyone knows (the old compose fallback) lets anyone forge image URLs.
        """
        if self.mode != "service":
            return
        key = (self.secret_key or "").strip()
        if not key:
            raise MissingSecretKey(
                "FVAUDIT_SECRET_KEY is not set: the API refuses to start in service mode without it "
                "(it signs image URLs and must be the same for every API process). "
                "Set it to a random value, e.g. FVAUDIT_SECRET_KEY=$(openssl rand -hex 32)")
        if key.lower() in WEAK_SECRET_KEYS or len(key) < MIN_SECRET_KEY_LENGTH:
            raise MissingSecretKey(
                f"FVAUDIT_SECRET_KEY is too weak ({'a known placeholder' if key.lower() in WEAK_SECRET_KEYS else f'{len(key)} characters'}): "
                f"use at least {MIN_SECRET_KEY_LENGTH} random characters, e.g. $(openssl rand -hex 32)")

    def signing_key(self) -> bytes:
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip().encode()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(key)
        try:
            os.link(tmp, path)          # first writer wins; others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip().encode()

    def is_allowed_path(self, path: str | Path) -> Path | None:
        """The resolved path if it lies under an allowed root, else None (symlinks resolved)."""
        try:
            p = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        for root in self.roots:
            if p == root or root in p.parents:
                return p
        return None


def engine_cache_dir(data_dir: Path | None = None) -> Path:
    """The engine's cache (decoded images, embeddings): ``FVAUDIT_CACHE_DIR`` when set; else
    ``<data dir>/cache`` for the service (its workers share the data dir), or
    ``~/.cache/fvaudit`` for the CLI run without a server. The one place that reads it."""
    env = os.environ.get("FVAUDIT_CACHE_DIR")
    if env:
        return Path(env)
    return data_dir / "cache" if data_dir is not None else Path.home() / ".cache" / "fvaudit"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and CLI commands that change the environment)."""
    get_settings.cache_clear()
