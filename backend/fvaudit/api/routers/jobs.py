"""Jobs: create (validated spec → row → wake-up), list, get, cancel, SSE progress stream."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from fvaudit.api.deps import DB, CurrentUser, IdPath, Principal, get_job_for, principal_sse
from fvaudit.api.schemas import Job as JobSchema, JobEventOut, JobKind, JobStatus
from fvaudit.api.serialize import jobs_out
from fvaudit.db.models import TERMINAL, Job, JobEvent, User
from fvaudit.db.session import session_scope
from fvaudit.jobs.create import create_job
from fvaudit.jobs.dispatch import publish
from fvaudit.jobs.lifecycle import request_cancel
from fvaudit.jobs.specs import JobCreate
from fvaudit.jobs.validate import validate_spec

router = APIRouter(prefix="/jobs", tags=["jobs"])

EXAMPLES = {
    "audit": {"summary": "audit: scan → push-down → scan → metrics (what the launch form sends)", "value": {
        "kind": "audit", "spec": {"name": "conv3 push-down", "model_id": 1, "train_set_id": 1, "val_set_id": 2,
                                  "attack": {"kind": "push_down", "layer": "relu3", "units": None, "k": 10,
                                             "alpha": None, "lr": 1e-4, "steps": 200, "batch_size": 256, "seed": 0,
                                             "score_norm": "batch_mean", "decoy_class": None, "decoy_ids": None},
                                  "k_clip": 5, "embedder": "auto"}}},
    "push_up": {"summary": "audit with a push-up (decoy class 8 = Bag)", "value": {
        "kind": "audit", "spec": {"model_id": 1, "train_set_id": 1, "val_set_id": 2,
                                  "attack": {"kind": "push_up", "layer": "relu3", "decoy_class": 8, "steps": 200}}}},
    "scan": {"summary": "scan: top-k of layers over image sets", "value": {
        "kind": "scan", "spec": {"model_id": 1, "image_set_ids": [1, 2], "layers": ["relu3"], "k": 10}}},
    "attack": {"summary": "attack alone (reusing a θ_init scan)", "value": {
        "kind": "attack", "spec": {"model_id": 1, "train_set_id": 1, "val_set_id": 2, "init_scan_job_id": 3,
                                   "attack": {"kind": "push_down", "layer": "relu3", "steps": 100}}}},
    "metrics": {"summary": "metrics from two scans", "value": {
        "kind": "metrics", "spec": {"before_scan_job_id": 3, "after_scan_job_id": 5, "val_set_id": 2,
                                    "train_set_id": 1, "attack_job_id": 4}}},
}


def _create(user_id: int, body: Any) -> int:
    with session_scope() as db:
        user = db.get(User, user_id)
        spec = validate_spec(db, user, body.kind, body.spec)
        job, wake = create_job(db, user, body.kind, spec)
        jid = job.id
    if wake:
        with session_scope() as db:
            publish(db, wake)
    return jid


@router.post("", response_model=JobSchema, status_code=201, summary="Launch a job (scan, attack, metrics, or audit chain)",
             responses={422: {"description": "invalid spec; `detail[].loc` names the field, e.g. "
                                             "[\"body\", \"spec\", \"attack\", \"alpha\"]"}})
async def create(user: CurrentUser, db: DB,
                 body: Annotated[JobCreate, Body(openapi_examples=EXAMPLES)]):
    jid = await run_in_threadpool(_create, user.id, body)
    return jobs_out(db, [db.get(Job, jid)])[0]


@router.get("", response_model=list[JobSchema], summary="Your jobs, newest first")
def list_jobs(db: DB, user: CurrentUser, status: JobStatus | None = None, kind: JobKind | None = None,
              parent_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
              top_level: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    q = select(Job)
    if not user.is_admin:
        q = q.where(Job.owner_id == user.id)
    if status:
        q = q.where(Job.status == status)
    if kind:
        q = q.where(Job.kind == kind)
    if parent_id is not None:
        q = q.where(Job.parent_id == parent_id)
    if top_level:
        q = q.where(Job.parent_id.is_(None))
    return jobs_out(db, db.scalars(q.order_by(Job.id.desc()).offset(offset).limit(limit)))


@router.get("/{job_id}", response_model=JobSchema, summary="One job")
def get_job(job_id: IdPath, db: DB, user: CurrentUser):
    return jobs_out(db, [get_job_for(db, Principal(user), job_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobSchema,
             summary="Cancel: queued jobs end at once, a running one stops at its next step")
def cancel(job_id: IdPath, db: DB, user: CurrentUser):
    job = get_job_for(db, Principal(user), job_id)
    request_cancel(db, job)
    db.commit()
    db.refresh(job)
    return jobs_out(db, [job])[0]


@router.get("/{job_id}/log", response_model=list[JobEventOut], summary="Stored events of a job and its children")
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


@router.get("/{job_id}/events", summary="Server-Sent Events: progress, log and status of a job until it ends",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: progress` {stage, done, total, loss?, l_attack?, l_maintain?, "
                                            "alpha?}; `event: log` {message}; `event: status` Job. Ends after a "
                                            "terminal status. Resumes after `Last-Event-ID`."}})
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
