"""Delete and hide: runs, models, image sets and sweeps with their rows and artifacts (issue 19).

What a deletion removes is decided here, in one place, for every router:

* a **run** goes with its audit: the chain that made it (every job of the chain, their
  scans, events and synthetic images), the α = 0 control run of the same audit, unit
  results and share links. A run of a sweep is deleted with its sweep; a control run with
  the run it controls (409 saying so).
* a **sweep** goes with its jobs, points, runs and the pruned models it made that nothing
  else uses.
* a **model** or an **image set** goes only when nothing derives from it (runs, pruned
  models, jobs of its own); otherwise 409 with the reason in words: it can be hidden.

Anything still queued or running is refused (409, "cancel it first"), and so is a job
outside the deletion that waits for one inside it. Artifact files (checkpoints, score
matrices, synthetic PNGs, thumbnails) go when no remaining row references them; the files
are unlinked only after the rows' transaction committed (:func:`commit_and_unlink`).
"""
from __future__ import annotations

import inspect
import re
import shutil
from typing import Any, Callable, Iterable

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from fvaudit.db.tables import (TERMINAL, Artifact, Image, ImageSet, Job, JobEvent, Model, Run, Scan, ScanLayer,
                               ShareLink, SweepPoint, SyntheticImage, UnitResult)

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# ------------------------------------------------------------------ the two endpoints of every resource

def require_owner(user, row, what: str):
    """``row`` (listed to every user) when ``user`` may change it: its owner or an admin; 403 naming ``what``."""
    if not (user.is_admin or (row.owner_id is not None and row.owner_id == user.id)):
        raise HTTPException(403, f"{what} is not yours: only its owner or an admin can change it")
    return row


def hide_and_delete_routes(router: APIRouter, path: str, param: str, noun: str, *, owned: Callable,
                           out: Callable, delete: Callable, response_model: Any, hide_summary: str,
                           delete_summary: str, conflicts: str) -> None:
    """``PATCH path {hidden}`` and ``DELETE path`` for one resource (runs, models, image sets,
    sweeps): ``owned(db, user, id)`` finds the row or refuses (404/403), ``out(db, row)`` is the
    PATCH response, ``delete(db, row)`` removes the rows and returns the files to unlink
    after the commit. The endpoints keep the names ``patch_<noun>`` / ``delete_<noun>``."""
    from fvaudit.api.deps import DB, CurrentUser, IdPath
    from fvaudit.api.schemas import HiddenPatch

    def hide(item_id: int, body: HiddenPatch, db: Session, user) -> Any:
        row = owned(db, user, item_id)
        row.hidden = body.hidden
        db.commit()
        return out(db, row)

    def remove(item_id: int, db: Session, user) -> Response:
        commit_and_unlink(db, delete(db, owned(db, user, item_id)))
        return Response(status_code=204)

    def endpoint(fn: Callable, *extra: tuple[str, Any]) -> Callable:
        """``fn`` as an endpoint whose path parameter is named ``param`` (the OpenAPI keeps it)."""
        params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann)
                  for name, ann in ((param, IdPath), *extra, ("db", DB), ("user", CurrentUser))]

        def call(**kw: Any) -> Any:
            return fn(kw.pop(param), **kw)

        call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return call

    router.add_api_route(path, endpoint(hide, ("body", HiddenPatch)), methods=["PATCH"], name=f"patch_{noun}",
                         response_model=response_model, summary=hide_summary)
    router.add_api_route(path, endpoint(remove), methods=["DELETE"], name=f"delete_{noun}", status_code=204,
                         response_class=Response, responses={409: {"description": conflicts}}, summary=delete_summary)


def refuse(detail: str) -> HTTPException:
    return HTTPException(409, detail)


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def words(parts: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ------------------------------------------------------------------ references in specs

def spec_ints(spec: Any, keys: tuple[str, ...] = (), suffix: str | None = None) -> set[int]:
    """Integer values of ``keys`` (or of keys ending with ``suffix``) anywhere in a JSON spec,
    lists of them included (``image_set_ids``)."""
    out: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k in keys or (suffix is not None and k.endswith(suffix)):
                    for y in (x if isinstance(x, list) else [x]):
                        if isinstance(y, int) and not isinstance(y, bool):
                            out.add(y)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(spec)
    return out


MODEL_KEYS = ("model_id",)
SET_KEYS = ("image_set_id", "image_set_ids", "train_set_id", "val_set_id")


def own_jobs(db: Session) -> list[tuple[int, str, dict]]:
    """(id, kind, spec) of the top-level jobs that have no run: scans, visualizations,
    prunes, detections and registrations launched on their own. Jobs of a run or a chain
    are counted through their run."""
    return [tuple(r) for r in db.execute(select(Job.id, Job.kind, Job.spec).where(
        Job.parent_id.is_(None), Job.group_job_id.is_(None), Job.run_id.is_(None)))]


# ------------------------------------------------------------------ models

def model_usage(db: Session, ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """What derives from each model: runs, pruned models, jobs of their own that name it."""
    ids = list(ids)
    out = {i: {"runs": 0, "models": 0, "jobs": 0} for i in ids}
    if not ids:
        return out
    for mid, n in db.execute(select(Run.model_id, func.count()).where(Run.model_id.in_(ids)).group_by(Run.model_id)):
        out[mid]["runs"] = n
    for mid, n in db.execute(select(Model.parent_model_id, func.count()).where(Model.parent_model_id.in_(ids))
                             .group_by(Model.parent_model_id)):
        out[mid]["models"] = n
    wanted = set(ids)
    for _, _, spec in own_jobs(db):
        for mid in spec_ints(spec, MODEL_KEYS) & wanted:
            out[mid]["jobs"] += 1
    return out


def model_status(db: Session, models: list[Model]) -> dict[int, tuple[str, str | None]]:
    """(status, reason) of each model: a pruned model is pending until its prune job made
    weights, failed when that job failed, was cancelled or is gone; any other is ready."""
    job_ids = {m.prune_job_id for m in models if m.checkpoint_id is None and m.prune_job_id is not None}
    jobs = {j.id: j for j in db.scalars(select(Job).where(Job.id.in_(job_ids)))} if job_ids else {}
    out = {}
    for m in models:
        if m.checkpoint_id is not None or (m.prune_job_id is None and m.source != "pruned"):
            out[m.id] = ("ready", None)
            continue
        j = jobs.get(m.prune_job_id) if m.prune_job_id is not None else None
        if m.prune_job_id is None:
            out[m.id] = ("pending", "its prune job has not been created yet")
        elif j is None:
            out[m.id] = ("failed", f"its prune job {m.prune_job_id} no longer exists; it has no weights")
        elif j.status in ("queued", "running"):
            out[m.id] = ("pending", f"its prune job {j.id} is {j.status}: no weights yet")
        elif j.status == "cancelled":
            out[m.id] = ("failed", f"its prune job {j.id} was cancelled before it made weights")
        elif j.status == "failed":
            out[m.id] = ("failed", f"its prune job {j.id} failed: {j.error or 'no reason given'}")
        else:
            out[m.id] = ("failed", f"its prune job {j.id} succeeded but recorded no weights")
    return out


def delete_model(db: Session, m: Model) -> list[str]:
    """Delete a model nothing derives from; 409 naming what does otherwise. Returns the
    artifact files to unlink after commit."""
    use = model_usage(db, [m.id])[m.id]
    parts = [plural(use["runs"], "run"), plural(use["models"], "derived model"), plural(use["jobs"], "job")]
    parts = [p for p, k in zip(parts, ("runs", "models", "jobs")) if use[k]]
    if parts:
        raise refuse(f"model {m.id} has {words(parts)}: it can be hidden, not deleted")
    if db.scalar(select(func.count()).select_from(Scan).where(Scan.model_id == m.id)):
        raise refuse(f"model {m.id} has scans (of jobs that are part of other work): it can be hidden, not deleted")
    arts = {m.checkpoint_id} - {None}
    arts |= set(db.scalars(select(SyntheticImage.artifact_id).where(SyntheticImage.model_id == m.id)))
    db.execute(delete(SyntheticImage).where(SyntheticImage.model_id == m.id))
    db.execute(update(SweepPoint).where(SweepPoint.model_id == m.id).values(model_id=None))
    db.delete(m)
    db.flush()
    return drop_artifacts(db, arts, kept_jobs_except=set())


# ------------------------------------------------------------------ image sets

def set_usage(db: Session, s: ImageSet) -> dict[str, int]:
    runs = db.scalar(select(func.count()).select_from(Run).where(
        or_(Run.train_set_id == s.id, Run.val_set_id == s.id))) or 0
    jobs = sum(1 for jid, kind, spec in own_jobs(db)
               if jid != s.job_id and kind != "register_images" and s.id in spec_ints(spec, SET_KEYS))
    return {"runs": runs, "jobs": jobs}


def delete_image_set(db: Session, s: ImageSet) -> list[str]:
    reg = db.get(Job, s.job_id) if s.job_id is not None else None
    if reg is not None and reg.status not in TERMINAL:
        raise refuse(f"image set {s.id} is still being indexed by job {reg.id} ({reg.status}): cancel it first")
    use = set_usage(db, s)
    parts = [p for p, k in ((plural(use["runs"], "run"), "runs"), (plural(use["jobs"], "job"), "jobs")) if use[k]]
    scans = db.scalar(select(func.count()).select_from(Scan).where(Scan.image_set_id == s.id)) or 0
    if not parts and scans:
        parts = [plural(scans, "scan")]
    if parts:
        raise refuse(f"image set {s.id} is used by {words(parts)}: it can be hidden, not deleted")
    thumbs = set(db.scalars(select(Image.thumb_sha).where(Image.image_set_id == s.id, Image.thumb_sha.is_not(None))))
    db.execute(delete(Image).where(Image.image_set_id == s.id))
    if reg is not None and reg.kind == "register_images":
        _delete_jobs(db, {reg.id})
    db.delete(s)
    db.flush()
    # a thumbnail is stored once per content: another set's image may show the same pixels
    shared = set(db.scalars(select(Image.thumb_sha).where(Image.thumb_sha.in_(thumbs)))) if thumbs else set()
    art_ids = set(db.scalars(select(Artifact.id).where(Artifact.sha256.in_(thumbs - shared)))) if thumbs else set()
    from fvaudit.api.serialize import _classes, _classes_lock

    with _classes_lock:
        _classes.pop(s.id, None)
    return drop_artifacts(db, art_ids, kept_jobs_except=set())


# ------------------------------------------------------------------ runs and sweeps

def job_closure(db: Session, seeds: set[int]) -> set[int]:
    """The jobs and every chain child and group member of theirs (recursively)."""
    ids = set(seeds)
    frontier = set(seeds)
    while frontier:
        more = set(db.scalars(select(Job.id).where(or_(Job.parent_id.in_(frontier), Job.group_job_id.in_(frontier)))))
        frontier = more - ids
        ids |= frontier
    return ids


def _check_deletable(db: Session, what: str, job_ids: set[int], run_ids: set[int]) -> None:
    """409 while a job of the deletion is not finished, or a job outside it waits for or
    reads one inside it (a dependency, an attack's weights, a run's units)."""
    busy = db.execute(select(Job.id, Job.kind, Job.status).where(Job.id.in_(list(job_ids)), Job.status.not_in(TERMINAL))
                      .order_by(Job.id).limit(1)).first() if job_ids else None
    if busy is not None:
        raise refuse(f"{what} is still {busy.status} (job {busy.id}, {busy.kind}): cancel it first")
    if run_ids:
        busy_run = db.execute(select(Run.id, Run.status).where(Run.id.in_(list(run_ids)), Run.status.in_(("queued", "running")))
                              .limit(1)).first()
        if busy_run is not None:
            raise refuse(f"{what} is still {busy_run.status} (run {busy_run.id}): cancel it first")
    for j in db.scalars(select(Job).where(Job.status.not_in(TERMINAL), Job.id.not_in(list(job_ids) or [0]))):
        uses = ({j.depends_on_id} & job_ids) or (spec_ints(j.spec, suffix="job_id") & job_ids) \
            or (spec_ints(j.spec, suffix="run_id") & run_ids)
        if uses:
            raise refuse(f"{what} is used by job {j.id} ({j.kind}, {j.status}): cancel it first")


def _delete_jobs(db: Session, job_ids: set[int]) -> set[int]:
    """Delete jobs (their scans, events, synthetic images, sweep points); returns the artifact
    ids their rows referenced. Finished jobs outside that depended on them lose the link."""
    if not job_ids:
        return set()
    ids = list(job_ids)
    scan_ids = set(db.scalars(select(Scan.id).where(Scan.job_id.in_(ids))))
    arts = set(db.scalars(select(ScanLayer.scores_id).where(ScanLayer.scan_id.in_(scan_ids)))) if scan_ids else set()
    arts |= set(db.scalars(select(SyntheticImage.artifact_id).where(SyntheticImage.job_id.in_(ids))))
    db.execute(delete(SyntheticImage).where(SyntheticImage.job_id.in_(ids)))
    if scan_ids:
        db.execute(delete(ScanLayer).where(ScanLayer.scan_id.in_(scan_ids)))
        db.execute(delete(Scan).where(Scan.id.in_(scan_ids)))
    db.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
    db.execute(delete(SweepPoint).where(SweepPoint.sweep_job_id.in_(ids)))
    db.execute(update(Job).where(Job.depends_on_id.in_(ids)).values(depends_on_id=None))
    db.execute(update(Job).where(Job.id.in_(ids)).values(parent_id=None, group_job_id=None, depends_on_id=None))
    db.execute(delete(Job).where(Job.id.in_(ids)))
    return arts


def _delete_runs(db: Session, run_ids: set[int]) -> set[int]:
    if not run_ids:
        return set()
    ids = list(run_ids)
    arts: set[int] = set()
    for sel, fin in db.execute(select(Run.selected_id, Run.final_id).where(Run.id.in_(ids))):
        arts |= {sel, fin} - {None}
    arts |= set(db.scalars(select(SyntheticImage.artifact_id).where(SyntheticImage.run_id.in_(ids))))
    db.execute(delete(SyntheticImage).where(SyntheticImage.run_id.in_(ids)))
    db.execute(delete(UnitResult).where(UnitResult.run_id.in_(ids)))
    db.execute(delete(ShareLink).where(ShareLink.run_id.in_(ids)))
    db.execute(update(Run).where(Run.control_run_id.in_(ids)).values(control_run_id=None))
    db.execute(delete(Run).where(Run.id.in_(ids)))
    return arts


def _work_dirs(job_ids: set[int]) -> list[str]:
    """The jobs' scratch folders (resume checkpoints of an attack), removed with them."""
    from fvaudit.config import get_settings

    root = get_settings().work_dir
    return [str(root / f"job-{i}") for i in sorted(job_ids)]


def delete_run(db: Session, run: Run) -> list[str]:
    root = db.get(Job, run.job_id) if run.job_id is not None else None
    if root is not None and root.kind == "sweep":
        raise refuse(f"run {run.id} is part of sweep {root.id}: delete the sweep (it deletes its runs), "
                     "or hide the run")
    main = db.scalar(select(Run.id).where(Run.control_run_id == run.id).limit(1))
    if main is not None:
        raise refuse(f"run {run.id} is the α = 0 control of run {main}: deleting run {main} deletes it too, "
                     "or hide the run")
    run_ids = {run.id} | ({run.control_run_id} - {None})
    if root is not None:
        run_ids |= set(db.scalars(select(Run.id).where(Run.job_id == root.id)))
    seeds = set(db.scalars(select(Job.id).where(Job.run_id.in_(run_ids)))) | ({root.id} if root else set())
    job_ids = job_closure(db, seeds)
    _check_deletable(db, f"run {run.id}", job_ids, run_ids)
    arts = _delete_jobs(db, job_ids) | _delete_runs(db, run_ids)
    db.flush()
    return drop_artifacts(db, arts, kept_jobs_except=job_ids) + _work_dirs(job_ids)


def delete_sweep(db: Session, sweep: Job) -> list[str]:
    job_ids = job_closure(db, {sweep.id})
    run_ids = set(db.scalars(select(Run.id).where(Run.job_id == sweep.id)))
    _check_deletable(db, f"sweep {sweep.id}", job_ids, run_ids)
    candidates = set(db.scalars(select(SweepPoint.model_id).where(SweepPoint.sweep_job_id == sweep.id,
                                                                 SweepPoint.model_id.is_not(None))))
    made = {m.id: m for m in db.scalars(select(Model).where(Model.id.in_(candidates),
                                                             Model.prune_job_id.in_(job_ids)))} if candidates else {}
    arts = _delete_jobs(db, job_ids) | _delete_runs(db, run_ids)
    db.flush()
    use = model_usage(db, made)
    for mid, m in made.items():      # a pruned model of this sweep that nothing else uses goes with it
        if not any(use[mid].values()) and not db.scalar(select(func.count()).select_from(Scan)
                                                        .where(Scan.model_id == mid)):
            arts |= {m.checkpoint_id} - {None}
            arts |= set(db.scalars(select(SyntheticImage.artifact_id).where(SyntheticImage.model_id == mid)))
            db.execute(delete(SyntheticImage).where(SyntheticImage.model_id == mid))
            db.delete(m)
    db.flush()
    return drop_artifacts(db, arts, kept_jobs_except=job_ids) + _work_dirs(job_ids)


# ------------------------------------------------------------------ artifacts

def _job_result_shas(db: Session) -> set[str]:
    """Artifact hashes the remaining jobs' results point at (an attack's weights, a
    detection's units), so a deletion never removes what another job reads. A prune job's
    ``sha`` only records what it wrote into its model row, which holds the reference."""
    out: set[str] = set()

    def walk(v: Any, kind: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, str) and SHA_RE.match(x) and not (kind == "prune" and k == "sha"):
                    out.add(x)
                else:
                    walk(x, kind)
        elif isinstance(v, list):
            for x in v:
                walk(x, kind)

    for kind, result in db.execute(select(Job.kind, Job.result)):
        if result:
            walk(result, kind)
    return out


def drop_artifacts(db: Session, candidates: set[int], kept_jobs_except: set[int]) -> list[str]:
    """Delete the artifact rows among ``candidates`` that no remaining row references; the
    paths of their files (relative to the store) to unlink once the transaction commits.
    Called after the deleted rows were flushed, so "remaining" means what is left."""
    candidates = {c for c in candidates if c is not None}
    if not candidates:
        return []
    ids = list(candidates)
    used: set[int] = set()
    used |= set(db.scalars(select(Model.checkpoint_id).where(Model.checkpoint_id.in_(ids))))
    used |= set(db.scalars(select(Run.selected_id).where(Run.selected_id.in_(ids))))
    used |= set(db.scalars(select(Run.final_id).where(Run.final_id.in_(ids))))
    used |= set(db.scalars(select(ScanLayer.scores_id).where(ScanLayer.scores_id.in_(ids))))
    used |= set(db.scalars(select(SyntheticImage.artifact_id).where(SyntheticImage.artifact_id.in_(ids))))
    rows = list(db.scalars(select(Artifact).where(Artifact.id.in_(candidates - used))))
    if not rows:
        return []
    shas = {a.sha256 for a in rows}
    kept = set(db.scalars(select(Image.thumb_sha).where(Image.thumb_sha.in_(shas))))
    kept |= _job_result_shas(db) & shas
    kept |= {w.removeprefix("artifact:") for w in db.scalars(select(Scan.weights).where(
        Scan.weights.in_([f"artifact:{s}" for s in shas])))}
    gone = [a for a in rows if a.sha256 not in kept]
    paths = [f"artifact:{a.path}" for a in gone]
    if gone:
        db.execute(delete(Artifact).where(Artifact.id.in_([a.id for a in gone])))
    return paths


def commit_and_unlink(db: Session, paths: list[str]) -> None:
    """Commit the deletion, then remove its files (artifacts no row references any more, and
    the jobs' scratch folders). A file is unlinked only when no artifact row came back for
    its content in the meantime (another job storing the same bytes)."""
    db.commit()
    from fvaudit.store import get_store

    store = get_store()
    for p in paths:
        if p.startswith("artifact:"):
            rel = p.removeprefix("artifact:")
            if db.scalar(select(Artifact.id).where(Artifact.path == rel)) is None:
                store.path(rel).unlink(missing_ok=True)
        else:
            shutil.rmtree(p, ignore_errors=True)
