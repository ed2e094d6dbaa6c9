"""Queries the job layer asks in more than one place: which queued jobs a worker may run now."""
from __future__ import annotations

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import aliased

from fvaudit.db.tables import Job
from fvaudit.jobs.registry import runnable_kinds


def runnable_condition(quick_only: bool = False, exclude_quick: bool = False):
    """SQL condition: a queued, not cancelled job whose dependency (if any) succeeded and
    whose group members (``group_job_id``: a scan's shards) all succeeded; ``quick_only``:
    of a ``quick`` kind only (the embedded mode's quick lane); ``exclude_quick``: of any other kind."""
    dep = aliased(Job)
    member = aliased(Job)
    return and_(
        Job.status == "queued",
        Job.cancel_requested.is_(False),
        Job.kind.in_(runnable_kinds(quick_only, exclude_quick)),
        or_(Job.depends_on_id.is_(None),
            Job.depends_on_id.in_(select(dep.id).where(dep.status == "succeeded").scalar_subquery())),
        ~exists().where(member.group_job_id == Job.id, member.status != "succeeded"),
    )
