"""The FastAPI application: ``/api/v1`` routers, error shapes, the dashboard at ``/``.

``uvicorn fvaudit.api.app:app`` (or ``fvaudit serve``). The reaper runs as a thread in
this process unless ``FVAUDIT_REAPER_INTERVAL=0``.
"""
from __future__ import annotations

import json
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import fvaudit
from fvaudit.api.security import install_log_redaction
from fvaudit.config import get_settings
from fvaudit.sanitize import clean_message, json_safe
from fvaudit.jobs.registry import is_kind
from fvaudit.jobs.validate import FieldError

log = logging.getLogger("fvaudit.api")
API = "/api/v1"

DESCRIPTION = """
fvaudit: audit the feature visualizations of image classifiers (scan → attack → scan →
metrics), every channel addressable as run / layer / unit.

**Auth**: `Authorization: Bearer <API token>` (`fvaudit token create`) for writes and
private reads. A share link (`?share=<token>` or `X-Share-Token`) reads one run.
Validation errors are 422 with `detail[].loc` naming the field.
"""


class UploadLimit:
    """Refuse request bodies above the upload limit while they stream in (413)."""

    def __init__(self, app: ASGIApp, path_suffix: str = "/models/upload") -> None:
        self.app = app
        self.suffix = path_suffix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(self.suffix):
            return await self.app(scope, receive, send)
        limit = get_settings().max_upload_mb * 2**20 + 2**20  # multipart overhead
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            return await self._too_large(send)
        seen = 0
        too_large = False

        async def limited() -> dict:
            nonlocal seen, too_large
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = b'{"detail":"upload larger than FVAUDIT_MAX_UPLOAD_MB"}'
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _NonFinite:
    """Stands for a NaN/Infinity literal (or a float that overflows to one) while parsing."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str):
    value = float(text)
    return value if value - value == 0 else _NonFinite(text)   # inf - inf and nan - nan are nan


def _non_finite_paths(obj, path: tuple = ()):
    if isinstance(obj, _NonFinite):
        yield path, obj.text
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _non_finite_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _non_finite_paths(v, path + (i,))


#: bytes without which a JSON body cannot hold a non-finite number (a NaN/Infinity
#: literal, or a float too large for a double: an exponent of 3+ digits or 300+ digits)
_MAYBE_NON_FINITE = re.compile(rb"NaN|Infinity|[eE]\+?\d{3}|\d{300}")


class RejectNonFiniteJSON:
    """422 for a JSON body holding NaN, Infinity or -Infinity, naming each field.

    Python's JSON parser accepts these literals (they are not JSON), pydantic then either
    accepts them (``lr``) or echoes them in a 422 that cannot be serialised (``steps``):
    both ended as a 500. Checked once here, before any route, so every route, including
    ones added later, refuses them the same way. Bodies are replayed unchanged.
    """

    METHODS = {"POST", "PUT", "PATCH", "DELETE"}

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _is_json(scope: Scope) -> bool:
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"").split(b";")[0].strip().lower()
        return ctype == b"" or ctype == b"application/json" or ctype.endswith(b"+json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.METHODS or not self._is_json(scope):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":          # client went away
                return await self.app(scope, _replay([msg], receive), send)
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        errors = self._errors(body)
        if errors:
            return await JSONResponse(status_code=422, content={"detail": errors})(scope, receive, send)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    @staticmethod
    def _errors(body: bytes) -> list[dict]:
        if not _MAYBE_NON_FINITE.search(body):
            return []
        try:
            doc = json.loads(body, parse_constant=_NonFinite, parse_float=_parse_float)
        except (ValueError, RecursionError):
            return []                                  # not JSON: the route's own parser says why
        return [{"loc": ["body", *map(json_safe, path)], "type": "finite_number", "input": text,
                 "msg": f"must be a finite number, not {text} (NaN and Infinity are not JSON numbers)"}
                for path, text in _non_finite_paths(doc)]


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def safe_errors(errors: list[dict]) -> list[dict]:
    """Validation errors fit to send: echoed inputs cut to 200 characters, NaN/Infinity as
    strings, no control characters, no server paths; ``loc``, ``msg`` and ``type`` kept."""
    out = []
    for e in errors:
        d = {"loc": [json_safe(p, limit=80) for p in e.get("loc") or []],
             "msg": clean_message(str(e.get("msg", "")), 1000), "type": str(e.get("type", "value_error"))}
        if "input" in e:
            d["input"] = json_safe(e["input"])
        if e.get("ctx"):
            d["ctx"] = json_safe(e["ctx"])
        out.append(d)
    return out


def _fix_loc(request: Request, errors: list[dict]) -> list[dict]:
    """POST /jobs: drop the union tag pydantic puts in the loc, so it reads
    ["body", "spec", "attack", "alpha"]; an unknown kind reads ["body", "kind"]."""
    if not (request.method == "POST" and request.url.path.rstrip("/").endswith(f"{API}/jobs")):
        return errors
    out = []
    for e in errors:
        e = dict(e)
        loc = list(e.get("loc") or [])
        if len(loc) >= 2 and loc[0] == "body" and is_kind(loc[1]):
            loc = ["body"] + loc[2:]
        elif loc == ["body"] and e.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["body", "kind"]
        e["loc"] = loc
        out.append(e)
    return out


def create_app(on_shutdown=None) -> FastAPI:
    settings = get_settings()

    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        get_settings().require_secret_key()       # service mode: refuse to start without one
        install_log_redaction()                   # again: uvicorn's dictConfig made new handlers
        reaper = None
        if settings.reaper_interval > 0:
            from fvaudit.jobs.reaper import ReaperThread

            reaper = ReaperThread(settings.reaper_interval).start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(title="fvaudit", version=fvaudit.__version__, description=DESCRIPTION,
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None, lifespan=lifespan)
    app.add_middleware(UploadLimit)
    app.add_middleware(RejectNonFiniteJSON)

    # every error body below is serialisable whatever the input was (json_safe) and names
    # no server path (clean_message): one place for all routes, present and future
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": safe_errors(_fix_loc(request, list(exc.errors())))})

    @app.exception_handler(FieldError)
    async def _field(request: Request, exc: FieldError):
        loc = list(exc.loc)
        if loc and loc[0] not in ("body", "query", "path"):
            loc = ["body"] + loc
        return JSONResponse(status_code=422, content={"detail": [{"loc": json_safe(loc), "type": exc.type,
                                                                  "msg": clean_message(exc.msg, 2000)}]})

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError):  # a value the database cannot store (NUL byte, range)
        return JSONResponse(status_code=422, content={"detail": [{"loc": ["request"], "type": "value_error",
                                                                  "msg": "invalid value: " + clean_message(
                                                                      str(exc.orig).splitlines()[0], 300)}]})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.detail, str):
            exc = HTTPException(exc.status_code, clean_message(exc.detail, 2000), headers=exc.headers)
        return await http_exception_handler(request, exc)

    from fvaudit.api.routers import detections, image_sets, jobs, models, runs, sweeps, system

    for r in (system.router, models.router, image_sets.router, jobs.router, runs.router, sweeps.router,
              detections.router):
        app.include_router(r, prefix=API)

    @app.get(API + "/{rest:path}", include_in_schema=False)
    async def _api_404(rest: str):
        return JSONResponse(status_code=404, content={"detail": f"no such endpoint: {API}/{rest}"})

    @app.get("/{path:path}", include_in_schema=False)
    async def _spa(path: str):
        dist = get_settings().dist_dir
        index = dist / "index.html"
        if path.startswith("api/"):
            return JSONResponse(status_code=404, content={"detail": "not found"})
        if path:
            try:
                target = (dist / path).resolve()
                if target.is_file() and dist.resolve() in target.parents:
                    cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
                    return FileResponse(target, headers={"Cache-Control": cache})
            except (OSError, ValueError):
                pass
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return JSONResponse(status_code=404, content={
            "detail": f"dashboard not built (no {index}); the API is at {API}/docs"})

    return app


app = create_app()
