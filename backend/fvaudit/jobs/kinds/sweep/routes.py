"""The ``sweep`` kind's router (SPEC §5): the pruning sweeps' points, results table and curves,
and their export; mounted by the app like every kind's router.

A sweep is a job of kind ``sweep`` (launched with ``POST /jobs``); these routes read its
points (``sweep_points``) with their pruned models' records and their audits' rows and
hand them to :mod:`fvaudit.engine.defence.sweep_table`, the same code the CLI writes its tables with.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from fvaudit.api import manage
from fvaudit.api.deps import DB, CurrentUser, IdPath, get_kind_job_for, top_level_jobs
from fvaudit.api.schemas import JobStatus
from fvaudit.db.tables import Job, SweepPoint
from fvaudit.engine.defence import sweep_table as tables   # (the route below is named sweep_table)
from fvaudit.jobs.kinds.sweep import point_records
from fvaudit.jobs.kinds.sweep.schemas import SweepDetail, SweepItem

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


def _name(job: Job) -> str:
    return (job.spec or {}).get("name") or f"sweep {job.id}"


def _item(job: Job, n_points: int) -> dict:
    return {"id": job.id, "name": _name(job), "status": job.status, "n_points": n_points,
            "created_at": job.created_at, "finished_at": job.finished_at, "hidden": bool(job.hidden)}


def _sweep(db, user, sweep_id: int) -> Job:
    return get_kind_job_for(db, user, sweep_id, "sweep", "a sweep")


@router.get("", response_model=list[SweepItem],
            summary="Your sweeps, newest first, filtered; the count of all matches in X-Total-Count")
def list_sweeps(db: DB, user: CurrentUser, response: Response, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0, status: JobStatus | None = None,
                include_hidden: bool = False):
    jobs = top_level_jobs(db, user, "sweep", limit, offset, response, status=status, include_hidden=include_hidden)
    counts = dict(db.execute(select(SweepPoint.sweep_job_id, func.count()).where(
        SweepPoint.sweep_job_id.in_([j.id for j in jobs])).group_by(SweepPoint.sweep_job_id)).all()) if jobs else {}
    return [_item(j, counts.get(j.id, 0)) for j in jobs]


@router.get("/{sweep_id}", response_model=SweepDetail,
            summary="A sweep: its points, the results table (one row per point and attack) and the curves")
def get_sweep(sweep_id: IdPath, db: DB, user: CurrentUser):
    job = _sweep(db, user, sweep_id)
    points = point_records(db, job)
    rows = tables.table_rows(points)
    return {**_item(job, len(points)), "error": job.error, "spec": job.spec or {},
            "attacks": list((job.spec or {}).get("attacks") or []), "columns": list(tables.COLUMNS), "points": points,
            "rows": rows, "curves": tables.curves(rows)}


def _sweep_item(db, job: Job) -> dict:
    n = db.scalar(select(func.count()).select_from(SweepPoint).where(SweepPoint.sweep_job_id == job.id)) or 0
    return _item(job, n)


manage.hide_and_delete_routes(
    router, "/{sweep_id}", "sweep_id", "sweep", owned=_sweep,
    out=_sweep_item, delete=manage.delete_sweep, response_model=SweepItem,
    hide_summary="Hide a sweep from the list (or show it again); owner or admin",
    delete_summary="Delete a sweep: its jobs, points, runs and the pruned models it made that nothing else uses, "
                   "with their artifacts; owner or admin",
    conflicts="still queued or running, or used by a job outside it")


@router.get("/{sweep_id}/table", response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/json": {}, "text/markdown": {}}}},
            summary="The results table as CSV, JSON (rows, curves, points) or markdown")
def sweep_table(sweep_id: IdPath, db: DB, user: CurrentUser,
                format: Literal["csv", "json", "md"] = "csv"):
    job = _sweep(db, user, sweep_id)
    points = point_records(db, job)
    rows = tables.table_rows(points)
    name = f"sweep-{job.id}"
    if format == "csv":
        return Response(tables.to_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if format == "md":
        return Response(tables.to_markdown(rows) + "\n", media_type="text/markdown",
                        headers={"Content-Disposition": f'attachment; filename="{name}.md"'})
    return Response(tables.to_json(rows, points), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}.json"'})
