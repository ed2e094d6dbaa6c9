"""FastAPI dependencies: DB session, who is asking (API token or share link), run access."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Iterator

from fastapi import Depends, Header, HTTPException, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fvaudit.api.security import TOKENS, CachedUser, well_formed
from fvaudit.config import get_settings
from fvaudit.db.tables import Job, Run, ShareLink
from fvaudit.db.session import sessionmaker_for

MAX_ID = 2**31 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, examples=[1])]


def get_db() -> Iterator[Session]:
    db = sessionmaker_for()()
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()


DB = Annotated[Session, Depends(get_db)]


@dataclass
class Principal:
    user: CachedUser | None
    share: ShareLink | None = None

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user.is_admin)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def unauthorized(msg: str = "Not authenticated: send Authorization: Bearer <API token>") -> HTTPException:
    return HTTPException(status_code=401, detail=msg, headers={"WWW-Authenticate": "Bearer"})


def _resolve(request: Request, db: Session, token: str | None, share: str | None) -> Principal:
    user = None
    if token is not None:
        user = TOKENS.lookup(db, token, get_settings().token_cache_seconds)
        if user is None:
            raise unauthorized("invalid or revoked API token")
    link = None
    if share:
        if well_formed(share):
            link = db.scalar(select(ShareLink).where(ShareLink.token == share, ShareLink.revoked_at.is_(None)))
        if link is None and user is None:
            raise HTTPException(status_code=404, detail="share link not found or revoked")
    return Principal(user, link)


def principal(request: Request, db: DB,
              share: Annotated[str | None, Query(max_length=200, description="share-link token (read-only access to one run)")] = None,
              x_share_token: Annotated[str | None, Header(max_length=200)] = None) -> Principal:
    return _resolve(request, db, _bearer(request), share or x_share_token)


def principal_sse(request: Request, db: DB,
                  token: Annotated[str | None, Query(max_length=200, description="API token (EventSource cannot send headers)")] = None,
                  share: Annotated[str | None, Query(max_length=200)] = None) -> Principal:
    return _resolve(request, db, _bearer(request) or token, share)


Who = Annotated[Principal, Depends(principal)]


def require_user(p: Who) -> CachedUser:
    if p.user is None:
        if p.share is not None:
            raise HTTPException(status_code=403, detail="a share link grants read-only access to one run")
        raise unauthorized()
    return p.user


CurrentUser = Annotated[CachedUser, Depends(require_user)]


def can_read_run(p: Principal, run: Run) -> bool:
    if p.user is not None and (run.owner_id == p.user.id or p.user.is_admin):
        return True
    return p.share is not None and p.share.run_id == run.id


def get_run_for(db: Session, p: Principal, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None or not can_read_run(p, run):
        raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    return run


def get_job_for(db: Session, p: Principal, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None or p.user is None or not (job.owner_id == p.user.id or p.user.is_admin):
        raise HTTPException(status_code=404, detail=f"job {job_id} not found")
    return job


def get_kind_job_for(db: Session, user, job_id: int, kind: str, noun: str) -> Job:
    """A job of one kind the user may read (a sweep, a detection); 404 naming what it is otherwise."""
    job = get_job_for(db, Principal(user), job_id)
    if job.kind != kind:
        raise HTTPException(404, f"job {job_id} is a {job.kind} job, not {noun}")
    return job


def top_level_jobs(db: Session, user, kind: str, limit: int, offset: int, response: Response | None = None,
                   status: str | None = None, include_hidden: bool = True) -> list[Job]:
    """The user's (every user's, for an admin) top-level jobs of one kind, newest first; with
    ``response``, the count of all matches goes in its X-Total-Count header."""
    q = select(Job).where(Job.kind == kind, Job.parent_id.is_(None))
    if not user.is_admin:
        q = q.where(Job.owner_id == user.id)
    if status:
        q = q.where(Job.status == status)
    if not include_hidden:
        q = q.where(Job.hidden.is_(False))
    if response is not None:
        return paged(db, q, (Job.id.desc(),), limit, offset, response)
    return list(db.scalars(q.order_by(Job.id.desc()).offset(offset).limit(limit)))


def like(text: str, anywhere: bool = True) -> str:
    """A LIKE pattern matching ``text`` anywhere (or, ``anywhere=False``, at the start: an index
    range scan), lower-cased, its own % and _ taken literally (escape \\)."""
    body = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return "%" + body if anywhere else body


def paged(db, q, order, limit: int, offset: int, response: Response) -> list:
    """One page of ``q`` in ``order``; the count of every row it matches goes in X-Total-Count."""
    total = db.scalar(q.with_only_columns(func.count(), maintain_column_froms=True).order_by(None)) or 0
    response.headers["X-Total-Count"] = str(total)
    return list(db.scalars(q.order_by(*order).offset(offset).limit(limit)))


#: a name substring; NUL is refused (422) because Postgres cannot hold it in a string
NameQuery = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$",
                                        description="name contains (case-insensitive)")]


def read_only(p: Principal, run: Run) -> bool:
    return not (p.user is not None and (run.owner_id == p.user.id or p.user.is_admin))
