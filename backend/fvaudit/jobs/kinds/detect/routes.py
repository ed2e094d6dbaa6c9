"""The ``detect`` kind's router (SPEC §6): "check this model" results, per layer and per unit,
mounted by the app like every kind's router (:meth:`~fvaudit.jobs.registry.JobKind.router`).

A detection is a job of kind ``detect`` (launched with ``POST /jobs``). Its verdicts live
in the job's result; every unit's suspicion, measures and top-k ids in one JSON artifact
(``result.units_sha256``), read here and served ranked, and per unit with the suspect's
and the reference's top-k images side by side.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from sqlalchemy import select

from fvaudit.api.deps import DB, CurrentUser, IdPath, get_kind_job_for, top_level_jobs
from fvaudit.jobs.kinds.detect.schemas import DetectionDetail, DetectionItem, DetectUnitDetail
from fvaudit.api.serialize import classes_of, img
from fvaudit.db.tables import Artifact, Job
from fvaudit.store import get_store

router = APIRouter(prefix="/detections", tags=["detections"])

_units_cache: "OrderedDict[str, dict]" = OrderedDict()
_units_lock = threading.Lock()


def _name(job: Job) -> str:
    spec = job.spec or {}
    return spec.get("name") or f"detection {job.id}"


def _item(job: Job) -> dict:
    spec, res = job.spec or {}, (job.result or {}) if job.status == "succeeded" else {}
    return {"id": job.id, "name": _name(job), "status": job.status, "progress": job.progress or {},
            "regime": "reference" if spec.get("reference") else "population",
            "verdict": res.get("verdict"), "p_value": res.get("p_value"), "warnings": list(res.get("warnings") or []),
            "suspect_model_id": (spec.get("suspect") or {}).get("model_id"),
            "reference_model_id": (spec.get("reference") or {}).get("model_id"),
            "layers": list(spec.get("layers") or []), "created_at": job.created_at, "finished_at": job.finished_at}


def _detection(db, user, job_id: int) -> Job:
    return get_kind_job_for(db, user, job_id, "detect", "a detection")


def _units(db, job: Job) -> dict[str, list[dict]]:
    """Every unit of every layer (the job's artifact), cached by content hash: it never changes."""
    sha = (job.result or {}).get("units_sha256") if job.status == "succeeded" else None
    if not sha:
        return {}
    with _units_lock:
        hit = _units_cache.get(sha)
        if hit is not None:
            _units_cache.move_to_end(sha)
            return hit
    art = db.scalar(select(Artifact).where(Artifact.sha256 == sha))
    if art is None:
        raise HTTPException(500, f"the units of detection {job.id} are missing from the artifact store")
    data = json.loads(get_store().path(art).read_text())
    with _units_lock:
        _units_cache[sha] = data
        while len(_units_cache) > 16:
            _units_cache.popitem(last=False)
    return data


def _ranked(units: list[dict]) -> list[dict]:
    """Units by suspicion, highest first (ties by unit index); dead or undefined units last, unranked."""
    live = sorted((u for u in units if u.get("suspicion") is not None), key=lambda u: (-u["suspicion"], u["unit"]))
    rest = [u for u in units if u.get("suspicion") is None]
    out = [{**u, "rank": i + 1} for i, u in enumerate(live)] + [{**u, "rank": None} for u in rest]
    return out


def _unit_out(u: dict) -> dict:
    return {k: u.get(k) for k in ("unit", "rank", "dead", "suspicion", "localisation", "driver", "measures")}


@router.get("", response_model=list[DetectionItem], summary="Your detections, newest first")
def list_detections(db: DB, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    return [_item(j) for j in top_level_jobs(db, user, "detect", limit, offset)]


@router.get("/{detection_id}", response_model=DetectionDetail,
            summary="A detection: its verdicts and every unit ranked by suspicion")
def get_detection(detection_id: IdPath, db: DB, user: CurrentUser):
    job = _detection(db, user, detection_id)
    units = _units(db, job)
    return {**_item(job), "error": job.error, "spec": job.spec or {},
            "result": job.result if job.status == "succeeded" else None,
            "units": {layer: [_unit_out(u) for u in _ranked(us)] for layer, us in units.items()}}


@router.get("/{detection_id}/layers/{layer}/units/{unit}", response_model=DetectUnitDetail,
            summary="One unit of a detection: its suspicion and evidence beside the suspect's and the reference's top-k")
def get_detection_unit(detection_id: IdPath, layer: Annotated[str, Path(max_length=300)],
                       unit: Annotated[int, Path(ge=0, le=1_000_000)], db: DB, user: CurrentUser):
    job = _detection(db, user, detection_id)
    if job.status != "succeeded":
        raise HTTPException(409, f"detection {job.id} has not succeeded ({job.status})")
    units = _units(db, job)
    if layer not in units:
        raise HTTPException(404, f"detection {job.id} did not check layer {layer!r}; it checked "
                                 + ", ".join(units))
    rows = units[layer]
    if unit >= len(rows):
        raise HTTPException(404, f"layer {layer} has {len(rows)} units (0..{len(rows) - 1}); there is no unit {unit}")
    ranked = _ranked(rows)
    by_unit = {u["unit"]: u for u in ranked}
    u = by_unit[unit]
    res = job.result or {}
    set_id = int(res["image_set_id"])
    classes = classes_of(db, set_id)

    def gallery(ids, labels):
        return None if ids is None else [img(set_id, i, l, classes) for i, l in zip(ids, labels)]

    order = [x["unit"] for x in ranked if x["rank"] is not None]
    pos = order.index(unit) if unit in order else None
    lv = dict((res.get("layers") or {}).get(layer) or {})
    return {**_unit_out(u), "detection_id": job.id, "detection_name": _name(job), "regime": res.get("regime"),
            "layer": layer, "n_units": len(rows), "layer_verdict": lv, "models": res.get("models") or {},
            "suspect_topk": gallery(u["topk_suspect"], u.get("topk_suspect_labels") or []),
            "reference_topk": gallery(u.get("topk_reference"), u.get("topk_reference_labels") or []),
            "prev_unit": unit - 1 if unit > 0 else None, "next_unit": unit + 1 if unit + 1 < len(rows) else None,
            "prev_ranked": order[pos - 1] if pos else None,
            "next_ranked": order[pos + 1] if pos is not None and pos + 1 < len(order) else None}
