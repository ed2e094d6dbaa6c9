"""The FastAPI application: ``/api/v1`` routers, error shapes, the dashboard at ``/``.

``uvicorn fvaudit.api.app:app`` (or ``fvaudit serve``). The reaper runs as a thread in
this process unless ``FVAUDIT_REAPER_INTERVAL=0``.
"""
from __future__ import annotations

import importlib

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


class BodyLimit:
    """413 for a request body above its route's limit, before anything reads or parses it.

    Every route reads at most ``FVAUDIT_MAX_BODY_BYTES`` (JSON bodies); the routes of
    :data:`LARGE_BODY_ROUTES` (the checkpoint upload) have their own, larger limit. A
    declared ``Content-Length`` above the limit is refused without reading a byte; a
    chunked body (no length) is counted as it streams in and refused at the first chunk
    that crosses the limit, so a 30 MB JSON body is never held in memory or parsed. The
    outermost of this app's middlewares: :class:`RejectNonFiniteJSON` buffers the body it
    inspects, and it only ever sees what this lets through.

    The refusal is raised from ``receive`` as an ``HTTPException(413)``: FastAPI re-raises
    exceptions of that type from body parsing (any other would become a 400), so a route
    answers the JSON 413 of the app's handler, and a middleware that was reading (the
    NaN check) lets it through to here, which answers the same.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def limit_for(scope: Scope) -> tuple[int, str]:
        """(bytes, the setting that sets them) of a request's route."""
        settings = get_settings()
        for path, what in LARGE_BODY_ROUTES.items():
            if scope["path"].rstrip("/") == path:
                return what(settings)
        return settings.max_body_bytes, "FVAUDIT_MAX_BODY_BYTES"

    @staticmethod
    def too_large(limit: int, setting: str) -> HTTPException:
        return HTTPException(413, f"request body larger than {limit} bytes ({setting})")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, setting = self.limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            declared_n = int(declared) if declared is not None else None
        except ValueError:
            declared_n = None
        if declared_n is not None and declared_n > limit:
            return await self._refuse(scope, send, self.too_large(limit, setting))
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise self.too_large(limit, setting)
            return msg

        started = False

        async def tracked(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, tracked)
        except StarletteHTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await self._refuse(scope, send, exc)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, exc: StarletteHTTPException) -> None:
        # Connection: close, since the rest of the body is left unread on the connection
        resp = JSONResponse(status_code=413, content={"detail": exc.detail}, headers={"Connection": "close"})
        await resp(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


#: routes whose bodies may exceed FVAUDIT_MAX_BODY_BYTES: path → (bytes, setting) from the settings
LARGE_BODY_ROUTES = {
    # a checkpoint of up to FVAUDIT_MAX_UPLOAD_MB, plus the multipart form around it
    f"{API}/models/upload": lambda s: (s.max_upload_mb * 2**20 + 2**20, "FVAUDIT_MAX_UPLOAD_MB"),
    # a Slingshots target: the route itself refuses a file over its 8 MiB with a 422 naming body.file;
    # this bound (one MiB more) only stops a body far beyond that before it is spooled to disk
    f"{API}/target-images": lambda s: (9 * 2**20, "the target image limit"),
}


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


#: where the Swagger UI / ReDoc assets are served from (this server, never a CDN)
DOCS_ASSETS = f"{API}/docs/assets"


def install_docs(app: FastAPI) -> None:
    """``/api/v1/docs`` (Swagger UI) and ``/api/v1/redoc`` with their scripts, styles and icon
    served by this server from the ``fastapi-offline`` package: FastAPI's default pages load
    them from a CDN, so the docs page the demo banner points to was blank offline (issue 19)."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.staticfiles import StaticFiles

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=static), name="docs-assets")
    openapi_url, title = app.openapi_url, app.title
    redirect = f"{API}/docs/oauth2-redirect"

    @app.get(f"{API}/docs", include_in_schema=False)
    async def _swagger(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=root + openapi_url, title=f"{title} API",
                                   oauth2_redirect_url=root + redirect,
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                                   # no validator badge: it is an image from validator.swagger.io
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get(redirect, include_in_schema=False)
    async def _swagger_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(f"{API}/redoc", include_in_schema=False)
    async def _redoc(request: Request):
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + openapi_url, title=f"{title} API (ReDoc)",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def create_app(on_shutdown=None) -> FastAPI:
    settings = get_settings()

    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        get_settings().require_secret_key()       # service mode: refuse to start without one
        install_log_redaction()                   # again: uvicorn's dictConfig made new handlers
        from fvaudit.api import memory

        # before the route threads start: they share a few malloc arenas (RSS flat under load)
        memory.limit_arenas(settings.malloc_arena_max)
        trimmer = memory.trimmer(settings.malloc_trim_seconds).start()
        reaper = None
        if settings.reaper_interval > 0:
            from fvaudit.jobs.reaper import reaper_thread

            reaper = reaper_thread(settings.reaper_interval).start()
        try:
            yield
        finally:
            trimmer.stop()
            if reaper is not None:
                reaper.stop()
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(title="fvaudit", version=fvaudit.__version__, description=DESCRIPTION,
                  openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None, lifespan=lifespan)
    install_docs(app)
    app.add_middleware(RejectNonFiniteJSON)
    app.add_middleware(BodyLimit)             # added last: outermost, before anything reads the body

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

    from fvaudit.api.routers import image_sets, jobs, models, runs, system, targets, units
    from fvaudit.jobs.registry import all_kinds

    for r in (system.router, models.router, image_sets.router, jobs.router, runs.router, units.router, targets.router):
        app.include_router(r, prefix=API)
    for kind in all_kinds():            # a kind may bring its own endpoints (/sweeps, /detections)
        if kind.routes is not None:
            app.include_router(importlib.import_module(kind.routes).router, prefix=API)

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
