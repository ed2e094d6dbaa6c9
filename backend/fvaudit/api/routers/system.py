"""Health and identity."""
from __future__ import annotations

import threading
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

import fvaudit
from fvaudit.api.deps import DB, CurrentUser
from fvaudit.api.schemas import Health, Me
from fvaudit.config import get_settings

router = APIRouter(tags=["system"])
_broker_lock = threading.Lock()
_broker_state: tuple[float, str] = (0.0, "unknown")


def broker_status() -> str:
    """Redis PING, cached for 2 s (health is polled; the broker is not)."""
    global _broker_state
    s = get_settings()
    if not s.broker_url:
        return "none"
    now = time.monotonic()
    with _broker_lock:
        if now - _broker_state[0] < 2.0:
            return _broker_state[1]
    try:
        import redis

        r = redis.Redis.from_url(s.broker_url, socket_connect_timeout=1, socket_timeout=1)
        try:
            r.ping()
            state = "ok"
        finally:
            r.close()
    except Exception as exc:
        state = f"error: {type(exc).__name__}"
    with _broker_lock:
        _broker_state = (now, state)
    return state


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "database unreachable"}},
            summary="Liveness: database, broker, mode")
def health(db: DB):
    s = get_settings()
    try:
        db.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"error: {type(exc).__name__}"
    broker = broker_status()
    ok = database == "ok" and broker in ("ok", "none")
    body = {"status": "ok" if ok else "degraded", "database": database, "broker": broker, "mode": s.mode,
            "version": fvaudit.__version__}
    if database != "ok":
        return JSONResponse(body, status_code=503)
    return body


@router.get("/me", response_model=Me, summary="The user behind the API token")
def me(user: CurrentUser):
    return {"user": user.name, "is_admin": user.is_admin, "id": user.id}
