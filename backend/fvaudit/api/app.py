"""The FastAPI application: ``/api/v1`` routers, error shapes, the dashboard at ``/``.

``uvicorn fvaudit.api.app:app`` (or ``fvaudit serve``). The reaper runs as a thread in
this process unless ``FVAUDIT_REAPER_INTERVAL=0``.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Receive, Scope, Send

import fvaudit
from fvaudit.config import get_settings
from fvaudit.jobs.specs import JOB_KINDS
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


def _fix_loc(request: Request, errors: list[dict]) -> list[dict]:
    """POST /jobs: drop the union tag pydantic puts in the loc, so it reads
    ["body", "spec", "attack", "alpha"]; an unknown kind reads ["body", "kind"]."""
    if not (request.method == "POST" and request.url.path.rstrip("/").endswith(f"{API}/jobs")):
        return errors
    out = []
    for e in errors:
        e = dict(e)
        loc = list(e.get("loc") or [])
        if len(loc) >= 2 and loc[0] == "body" and loc[1] in JOB_KINDS:
            loc = ["body"] + loc[2:]
        elif loc == ["body"] and e.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["body", "kind"]
        e["loc"] = loc
        out.append(e)
    return out


def create_app(on_shutdown=None) -> FastAPI:
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
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

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content=jsonable_encoder({"detail": _fix_loc(request, list(exc.errors()))}))

    @app.exception_handler(FieldError)
    async def _field(request: Request, exc: FieldError):
        loc = list(exc.loc)
        if loc and loc[0] not in ("body", "query", "path"):
            loc = ["body"] + loc
        return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": exc.msg, "type": exc.type}]})

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError):  # a value the database cannot store (NUL byte, range)
        return JSONResponse(status_code=422, content={"detail": [{"loc": ["request"], "type": "value_error",
                                                                  "msg": f"invalid value: {str(exc.orig).splitlines()[0]}"}]})

    from fvaudit.api.routers import image_sets, jobs, models, runs, system

    for r in (system.router, models.router, image_sets.router, jobs.router, runs.router):
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
