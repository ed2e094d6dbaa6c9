"""Jobs: the kinds (``GET /job-kinds``), create (validated spec → row → wake-up), list, get, cancel, SSE.

The ``POST /jobs`` body is a discriminated union on ``kind`` built from the job-kind
registry when the router is built, so a kind registered before :func:`make_router`
(or ``create_app``) runs appears in the OpenAPI schema and is validated like the others.
``router`` (what the app includes) is built on access from the current registry.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from fvaudit.api.deps import (DB, CurrentUser, IdPath, Principal, Who, get_job_for, paged, principal_sse,
                              require_user)
from fvaudit.api.schemas import Job as JobSchema, JobEventOut, JobKindOut, JobStatus
from fvaudit.api.serialize import jobs_out
from fvaudit.db.tables import TERMINAL, Job, JobEvent
from fvaudit.db.session import session_scope
from fvaudit.jobs.create import submit
from fvaudit.jobs.lifecycle import request_cancel
from fvaudit.jobs.registry import all_kinds, job_create_model, kind_infos


def examples() -> dict:
    """Request examples: each kind's spec examples (from its pydantic model)."""
    out = {}
    for k in all_kinds():
        for i, ex in enumerate((k.spec.model_config.get("json_schema_extra") or {}).get("examples", [])):
            out[k.name if i == 0 else f"{k.name}-{i + 1}"] = {"summary": f"{k.title}: {k.description}",
                                                               "value": {"kind": k.name, "spec": ex}}
    return out


def make_router() -> APIRouter:
    router = APIRouter(tags=["jobs"])
    JobCreate = job_create_model()

    @router.get("/job-kinds", response_model=list[JobKindOut], summary="The job kinds: spec schema, defaults, "
                                                                       "chain steps and their labels")
    def job_kinds(who: Who):
        require_user(who)
        return [vars(i) for i in kind_infos()]

    async def create(user: CurrentUser, db: DB, body):
        jid = await run_in_threadpool(submit, user.id, body.kind, body.spec)
        return jobs_out(db, [db.get(Job, jid)])[0]

    # the union is a value of this call, not a module global: give FastAPI the object itself
    create.__annotations__["body"] = Annotated[JobCreate, Body(openapi_examples=examples())]
    router.add_api_route("/jobs", create, methods=["POST"], response_model=JobSchema, status_code=201,
                         summary="Launch a job (any kind of GET /job-kinds; a chain kind creates its steps)",
                         responses={422: {"description": "invalid spec; `detail[].loc` names the field, e.g. "
                                                         "[\"body\", \"spec\", \"attack\", \"alpha\"]"}})

    @router.get("/jobs", response_model=list[JobSchema],
                summary="Your jobs, newest first, filtered; the count of all matches in X-Total-Count")
    def list_jobs(db: DB, user: CurrentUser, response: Response, status: JobStatus | None = None,
                  kind: Annotated[str | None, Query(min_length=1, max_length=32, pattern="^[a-z0-9_-]+$")] = None,
                  parent_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                  top_level: Annotated[bool, Query(description="only jobs that are no chain step or group member "
                                                               "(what a jobs index page lists)")] = False,
                  include_hidden: Annotated[bool, Query(description="also hidden jobs (a hidden sweep)")] = False,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
        q = select(Job)
        if not include_hidden:
            q = q.where(Job.hidden.is_(False))
        if not user.is_admin:
            q = q.where(Job.owner_id == user.id)
        if status:
            q = q.where(Job.status == status)
        if kind:
            q = q.where(Job.kind == kind)
        if parent_id is not None:
            q = q.where(Job.parent_id == parent_id)
        if top_level:
            q = q.where(Job.parent_id.is_(None), Job.group_job_id.is_(None))
        return jobs_out(db, paged(db, q, (Job.id.desc(),), limit, offset, response))

    @router.get("/jobs/{job_id}", response_model=JobSchema, summary="One job")
    def get_job(job_id: IdPath, db: DB, user: CurrentUser):
        return jobs_out(db, [get_job_for(db, Principal(user), job_id)])[0]

    @router.post("/jobs/{job_id}/cancel", response_model=JobSchema,
                 summary="Cancel: queued jobs end at once, a running one stops at its next step")
    def cancel(job_id: IdPath, db: DB, user: CurrentUser):
        job = get_job_for(db, Principal(user), job_id)
        request_cancel(db, job)
        db.commit()
        db.refresh(job)
        return jobs_out(db, [job])[0]

    @router.get("/jobs/{job_id}/log", response_model=list[JobEventOut], summary="Stored events of a job and its children")
    def job_log(job_id: IdPath, db: DB, user: CurrentUser, after: Annotated[int, Query(ge=0)] = 0,
                type: Annotated[str | None, Query(pattern="^(progress|log|status)$")] = None,
                limit: Annotated[int, Query(ge=1, le=5000)] = 1000):
        job = get_job_for(db, Principal(user), job_id)
        ids = [job.id] + list(db.scalars(select(Job.id).where(Job.parent_id == job.id)))
        q = select(JobEvent).where(JobEvent.job_id.in_(ids), JobEvent.id > after)
        if type:
            q = q.where(JobEvent.type == type)
        return [{"id": e.id, "job_id": e.job_id, "type": e.type, "data": e.data, "created_at": e.created_at}
                for e in db.scalars(q.order_by(JobEvent.id).limit(limit))]

    router.add_api_route("/jobs/{job_id}/events", events, methods=["GET"],
                         summary="Server-Sent Events: progress, log and status of a job until it ends",
                         response_class=StreamingResponse,
                         responses={200: {"content": {"text/event-stream": {}},
                                          "description": "`event: progress` {stage, done, total, loss?, l_attack?, "
                                                         "l_maintain?, alpha?}; `event: log` {message}; `event: status` "
                                                         "Job. Ends after a terminal status. Resumes after "
                                                         "`Last-Event-ID`."}})
    return router


def __getattr__(name: str):
    if name == "router":
        return make_router()
    raise AttributeError(name)


def _sse(event: str, data: Any, eid: int | None = None) -> str:
    head = f"id: {eid}\n" if eid is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


def _snapshot(job_id: int, after: int) -> tuple[dict, list[tuple[int, int, str, dict]], bool]:
    with session_scope() as db:
        job = db.get(Job, job_id)
        children = list(db.scalars(select(Job.id).where(Job.parent_id == job_id)))
        events = db.execute(select(JobEvent.id, JobEvent.job_id, JobEvent.type, JobEvent.data)
                            .where(JobEvent.job_id.in_([job_id] + children), JobEvent.id > after)
                            .order_by(JobEvent.id).limit(500)).all()
        out = jobs_out(db, [job])[0]
        return out, [tuple(e) for e in events], job.status in TERMINAL


async def events(job_id: IdPath, request: Request, who: Annotated[Principal, Depends(principal_sse)],
                 last_event_id: Annotated[str | None, Header(max_length=32)] = None,
                 poll: Annotated[float, Query(ge=0.05, le=10)] = 0.25):
    if who.user is None:
        raise HTTPException(404, f"job {job_id} not found")
    with session_scope() as db:
        get_job_for(db, who, job_id)
    try:
        start = max(0, int(last_event_id or 0))
    except ValueError:
        start = 0

    async def stream():
        last = start
        sent_status: str | None = None
        keepalive = time.monotonic()
        job, evs, done = await run_in_threadpool(_snapshot, job_id, last)
        yield _sse("status", job)
        sent_status = job["status"]
        while True:
            for eid, ejob, etype, data in evs:
                last = eid
                if etype == "status":
                    if ejob == job_id:
                        job, _, _ = await run_in_threadpool(_snapshot, job_id, eid)
                        if job["status"] != sent_status or data.get("status") != sent_status:
                            yield _sse("status", job, eid)
                            sent_status = job["status"]
                elif etype == "progress":
                    if ejob == job_id:
                        yield _sse("progress", data, eid)
                else:
                    payload = dict(data)
                    if ejob != job_id:
                        payload.setdefault("job_id", ejob)
                    yield _sse("log", payload, eid)
            if done and len(evs) < 500:
                if sent_status != job["status"]:
                    yield _sse("status", job)
                return
            if await request.is_disconnected():
                return
            if len(evs) < 500:
                await asyncio.sleep(poll)
            if time.monotonic() - keepalive > 15:
                keepalive = time.monotonic()
                yield ": keep-alive\n\n"
            job, evs, done = await run_in_threadpool(_snapshot, job_id, last)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"})
