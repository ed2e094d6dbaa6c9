"""Runs: summary, per-layer unit table, per-unit detail, export; share links."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path as FPath, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import asc, desc, func, nulls_last, select

from fvaudit.api import manage
from fvaudit.api.deps import (DB, CurrentUser, IdPath, NameQuery, Principal, Who, can_read_run, get_run_for, like, paged,
                              read_only)
from fvaudit.api.schemas import (JobStatus, RunDetail, RunListItem, ShareOut, UnitDetail, UnitPage,
                                 UnitState)
from fvaudit.api.security import new_share_token, well_formed
from fvaudit.api.serialize import run_detail, run_item, unit_detail, unit_row, unit_states
from fvaudit.config import get_settings
from fvaudit.db.tables import METRICS, Artifact, Run, ShareLink, SyntheticImage, UnitResult, utcnow
from fvaudit.store import get_store

#: SemanticLens per-unit scores a metrics job stores (issue 22), exported before/after
SCORES = ("clarity", "polysemanticity", "redundancy")

router = APIRouter(tags=["runs"])
LayerPath = Annotated[str, FPath(min_length=1, max_length=300, pattern=r"^[^\x00/]+$", examples=["relu1"])]
UnitPath = Annotated[int, FPath(ge=0, le=2**31 - 1, examples=[0])]
SortKey = Literal["unit", "clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"]


@router.get("/runs", response_model=list[RunListItem], tags=["runs"],
            summary="Your runs, newest first, filtered; the count of all matches in X-Total-Count")
def list_runs(db: DB, user: CurrentUser, response: Response, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
              offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0, status: JobStatus | None = None,
              model_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None, q: NameQuery = None,
              include_hidden: bool = False):
    query = select(Run)
    if not user.is_admin:
        query = query.where(Run.owner_id == user.id)
    if status:
        query = query.where(Run.status == status)
    if model_id is not None:
        query = query.where(Run.model_id == model_id)
    if q:
        query = query.where(func.lower(Run.name).like(like(q), escape="\\"))
    if not include_hidden:
        query = query.where(Run.hidden.is_(False))
    return [run_item(r) for r in paged(db, query, (Run.id.desc(),), limit, offset, response)]


@router.get("/runs/{run_id}", response_model=RunDetail, summary="Run summary: Table 3.1 rows, accuracy, α, histograms")
def get_run(run_id: IdPath, db: DB, who: Who):
    run = get_run_for(db, who, run_id)
    return run_detail(db, run, read_only(who, run))


manage.hide_and_delete_routes(
    router, "/runs/{run_id}", "run_id", "run", owned=lambda db, user, run_id: _owned_run(db, user, run_id),
    out=lambda db, run: run_item(run), delete=manage.delete_run, response_model=RunListItem,
    hide_summary="Hide a run from the lists (or show it again); owner or admin",
    delete_summary="Delete a run with its audit: jobs, unit results, synthetic images, share links and the "
                   "artifacts nothing else references; owner or admin",
    conflicts="still queued or running, part of a sweep, or the control of another run (the detail says which)")


@dataclass
class _RunRef:
    """What access checks and the unit page need of a run (not its large JSON columns)."""

    id: int
    owner_id: int | None
    layer_info: dict | None = None
    layers: list | None = None
    attack_kind: str | None = None


def _run_ref(db, who: Principal, run_id: int) -> _RunRef:
    row = db.execute(select(Run.owner_id, Run.layer_info, Run.layers, Run.attack_kind)
                     .where(Run.id == run_id)).one_or_none()
    ref = _RunRef(run_id, row.owner_id, row.layer_info, row.layers, row.attack_kind) if row else None
    if ref is None or not can_read_run(who, ref):
        raise HTTPException(404, f"run {run_id} not found")
    return ref


@router.get("/runs/{run_id}/layers/{layer}/units", response_model=UnitPage,
            summary="Per-layer unit table, sortable by any metric (nulls last), paginated")
def units(run_id: IdPath, layer: LayerPath, db: DB, who: Who, sort: SortKey = "unit",
          order: Literal["asc", "desc"] = "asc", page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
          page_size: Annotated[int, Query(ge=1, le=1000)] = 50, attacked_only: bool = False,
          include_dead: bool = True):
    ref = _run_ref(db, who, run_id)
    if layer not in (ref.layer_info or {}) and layer not in (ref.layers or []):
        raise HTTPException(404, f"layer {layer!r} not in run {run_id}")
    cond = [UnitResult.run_id == run_id, UnitResult.layer == layer]
    if attacked_only:
        cond.append(UnitResult.attacked.is_(True))
    if not include_dead:
        cond.append(UnitResult.dead.is_(False))
    total = db.scalar(select(func.count()).select_from(UnitResult).where(*cond)) or 0
    col = getattr(UnitResult, sort)
    key = nulls_last(desc(col)) if order == "desc" else nulls_last(asc(col))
    cols = [UnitResult.unit, UnitResult.attacked, UnitResult.dead] + [getattr(UnitResult, m) for m in METRICS]
    rows = db.execute(select(*cols).where(*cond).order_by(key, UnitResult.unit)
                      .offset((page - 1) * page_size).limit(page_size)).all()
    items = [dict(zip(("unit", "attacked", "dead", *METRICS), r)) for r in rows]
    body = {"items": items, "total": total, "page": page, "page_size": page_size}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/runs/{run_id}/layers/{layer}/units/{unit}", response_model=UnitDetail,
            summary="One unit in one state: top-k before/after (train and validation), metrics, nearest units",
            responses={404: {"description": "no such run, unit, or state of this run"}})
def unit(run_id: IdPath, layer: LayerPath, unit: UnitPath, db: DB, who: Who,
         state: Annotated[UnitState, Query(description="the state shown as 'after': selected (the latest within the "
                                                       "accuracy budget) or final (the last step)")] = "selected"):
    # the hot path of the unit page: one indexed lookup joined with the run's owner and
    # layer info (not its large JSON columns), serialised without re-validation
    row = db.execute(select(UnitResult, Run.owner_id, Run.layer_info, Run.attack_kind)
                     .join(Run, Run.id == UnitResult.run_id)
                     .where(UnitResult.run_id == run_id, UnitResult.layer == layer, UnitResult.unit == unit)
                     ).one_or_none()
    if row is None:
        _run_ref(db, who, run_id)                     # 404 for the run itself first
        raise HTTPException(404, f"unit {layer}/{unit} not found in run {run_id}")
    if not can_read_run(who, _RunRef(run_id, row.owner_id)):
        raise HTTPException(404, f"run {run_id} not found")
    ref = _RunRef(run_id, row.owner_id, row.layer_info, attack_kind=row.attack_kind)
    main, states = unit_states(row.UnitResult)
    if state not in states:
        raise HTTPException(404, f"run {run_id} has no {state} state for unit {layer}/{unit}: its metrics measured "
                                 f"only {' and '.join(states)}" + (" (a run measured before the final state's "
                                                                   "top-k were kept: re-run its metrics to add it)"
                                                                   if state == "final" and (row.UnitResult.extra or {})
                                                                   .get("states", {}).get("final") else ""))
    ro = read_only(who, ref)          # read-only = read through a share link: its image URLs die with it
    body = unit_detail(db, ref, row.UnitResult, ro, share_id=who.share.id if ro and who.share else None, state=state)
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def _png(art: Artifact, request: Request) -> Response:
    """A synthetic image: allowed by a token or a share link on each request, so a browser
    must ask again before reusing it (``no-cache``: a 304 when unchanged). A one-year
    ``immutable`` copy kept showing after its share link was revoked."""
    headers = {"Cache-Control": "private, no-cache", "ETag": f'"{art.sha256}"'}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return FileResponse(get_store().path(art), media_type="image/png", headers=headers)


@router.get("/runs/{run_id}/layers/{layer}/units/{unit}/synthetic/{which}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}},
            summary="A unit's first-seed synthetic visualization before (θ_init) or after the attack")
def synthetic(run_id: IdPath, layer: LayerPath, unit: UnitPath, which: Literal["before", "after"], request: Request,
              db: DB, who: Who):
    run = get_run_for(db, who, run_id)
    state = SyntheticImage.state == "init" if which == "before" else SyntheticImage.state != "init"
    img = db.scalar(select(SyntheticImage).where(SyntheticImage.run_id == run.id, SyntheticImage.layer == layer,
                                                 SyntheticImage.unit == unit, state)
                    .order_by(SyntheticImage.job_id.desc(), SyntheticImage.seed).limit(1))
    if img is None:
        raise HTTPException(404, "no synthetic visualization for this unit")
    return _png(db.get(Artifact, img.artifact_id), request)


@router.get("/synthetic-images/{image_id}", response_class=Response, responses={200: {"content": {"image/png": {}}}},
            tags=["synthetic"], summary="One synthetic visualization (PNG): readable with the run's access, or by "
                                        "any user when it belongs to no run")
def synthetic_image(image_id: IdPath, request: Request, db: DB, who: Who):
    img = db.get(SyntheticImage, image_id)
    if img is None:
        raise HTTPException(404, f"synthetic image {image_id} not found")
    if img.run_id is not None:
        get_run_for(db, who, img.run_id)
    elif who.user is None:
        raise HTTPException(404, f"synthetic image {image_id} not found")
    return _png(db.get(Artifact, img.artifact_id), request)


def _all_units(db, run: Run) -> list[UnitResult]:
    return list(db.scalars(select(UnitResult).where(UnitResult.run_id == run.id)
                           .order_by(UnitResult.layer, UnitResult.unit)))


@router.get("/runs/{run_id}/export.json", summary="Everything about a run as JSON (summary + every unit)")
def export_json(run_id: IdPath, db: DB, who: Who):
    run = get_run_for(db, who, run_id)
    detail = run_detail(db, run, read_only(who, run))
    units_out = [{"layer": u.layer, **unit_row(u), "topk": u.topk, "nearest": u.nearest, "clip_self": u.clip_self,
                  "labels": (u.extra or {}).get("labels"), "scores": (u.extra or {}).get("scores")}
                 for u in _all_units(db, run)]
    from fastapi.encoders import jsonable_encoder

    return JSONResponse(jsonable_encoder({"run": detail, "units": units_out}),
                        headers={"Content-Disposition": f'attachment; filename="run-{run.id}.json"'})


@router.get("/runs/{run_id}/export.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}},
            summary="One CSV row per unit: metrics, top-k ids and class-concept labels before/after")
def export_csv(run_id: IdPath, db: DB, who: Who):
    run = get_run_for(db, who, run_id)
    buf = io.StringIO()
    w = csv.writer(buf)
    roles = ("val", "train")
    w.writerow(["run_id", "layer", "unit", "attacked", "dead", *METRICS,
                *[f"{r}_topk_{s}" for r in roles for s in ("before", "after")], "label_before", "label_after",
                *[f"{m}_{s}" for m in SCORES for s in ("before", "after")]])
    for u in _all_units(db, run):
        topk = u.topk or {}
        cells = []
        for r in roles:
            for s in ("before", "after"):
                cells.append(" ".join(map(str, ((topk.get(r) or {}).get(s) or {}).get("ids", []))))
        labels = (u.extra or {}).get("labels") or {}
        main = (u.extra or {}).get("after_state") or "selected"
        after = labels.get(main) or {}
        scores = (u.extra or {}).get("scores") or {}
        score_cells = [("" if (scores.get(st) or {}).get(m) is None else repr(scores[st][m]))
                       for m in SCORES for st in ("before", main)]
        w.writerow([run.id, u.layer, u.unit, int(u.attacked), int(u.dead),
                    *["" if getattr(u, m) is None else repr(getattr(u, m)) for m in METRICS], *cells,
                    (labels.get("before") or {}).get("name") or "", after.get("name") or "", *score_cells])
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="run-{run.id}.csv"'})


# ---------------------------------------------------------------- shares

def _share_out(link: ShareLink, request: Request) -> dict:
    base = get_settings().public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return {"token": link.token, "url": f"{base}/runs/{link.run_id}?share={link.token}", "run_id": link.run_id,
            "created_at": link.created_at, "revoked_at": link.revoked_at}


def _owned_run(db, user, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None or not (run.owner_id == user.id or user.is_admin):
        raise HTTPException(404, f"run {run_id} not found")
    return run


@router.post("/runs/{run_id}/shares", response_model=ShareOut, status_code=201, tags=["shares"],
             summary="Create a share link: read-only access to this run, revocable")
def create_share(run_id: IdPath, request: Request, db: DB, user: CurrentUser):
    run = _owned_run(db, user, run_id)
    link = ShareLink(token=new_share_token(), run_id=run.id, created_by=user.id)
    db.add(link)
    db.commit()
    return _share_out(link, request)


@router.get("/runs/{run_id}/shares", response_model=list[ShareOut], tags=["shares"],
            summary="Share links of a run (owner only)")
def list_shares(run_id: IdPath, request: Request, db: DB, user: CurrentUser,
                include_revoked: bool = False):
    run = _owned_run(db, user, run_id)
    q = select(ShareLink).where(ShareLink.run_id == run.id)
    if not include_revoked:
        q = q.where(ShareLink.revoked_at.is_(None))
    return [_share_out(s, request) for s in db.scalars(q.order_by(ShareLink.id))]


@router.delete("/shares/{token}", status_code=204, response_class=Response, tags=["shares"],
               summary="Revoke a share link (later reads with it → 404)")
def revoke_share(token: Annotated[str, FPath(min_length=1, max_length=200)], db: DB, user: CurrentUser):
    link = db.scalar(select(ShareLink).where(ShareLink.token == token)) if well_formed(token) else None
    if link is None:
        raise HTTPException(404, "share link not found")
    _owned_run(db, user, link.run_id)
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        db.commit()
    return Response(status_code=204)

