"""Rows → API JSON."""
from __future__ import annotations

import math
import threading
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from fvaudit.api.security import image_sig_expiry, sign_image
from fvaudit.config import get_settings
from fvaudit.db.tables import METRICS, Artifact, ImageSet, Job, Run, SyntheticImage, UnitResult
from fvaudit.jobs.registry import job_label

API = "/api/v1"

_classes_lock = threading.Lock()
_classes: dict[int, list[str]] = {}
_key: bytes | None = None


def signing_key() -> bytes:
    global _key
    if _key is None:
        _key = get_settings().signing_key()
    return _key



def classes_of(db: Session, image_set_id: int) -> list[str]:
    """Class names of an image set (a ready row is immutable: cached per process)."""
    with _classes_lock:
        hit = _classes.get(image_set_id)
    if hit is not None:
        return hit
    row = db.execute(select(ImageSet.classes, ImageSet.status).where(ImageSet.id == image_set_id)).one_or_none()
    classes = list(row.classes or []) if row is not None else []
    if row is not None and row.status == "ready":      # an indexing set has no classes yet: not cached
        with _classes_lock:
            _classes[image_set_id] = classes
    return list(classes)


def image_urls(image_set_id: int, image_id: int, share_id: int | None = None) -> tuple[str, str]:
    """Signed thumb/full URLs: they expire, and die with the share link they were handed out through."""
    sig = sign_image(signing_key(), image_set_id, image_id, image_sig_expiry(get_settings().image_url_ttl), share_id)
    base = f"{API}/image-sets/{image_set_id}/images/{image_id}"
    return f"{base}/thumb?sig={sig}", f"{base}/full?sig={sig}"


def img(image_set_id: int, image_id: int, label: int, classes: list[str], score: float | None = None,
        share_id: int | None = None) -> dict:
    thumb, full = image_urls(image_set_id, image_id, share_id)
    return {"image_id": int(image_id), "image_set_id": int(image_set_id), "label": int(label),
            "label_name": classes[label] if 0 <= label < len(classes) else str(label), "score": score,
            "thumb_url": thumb, "full_url": full}


def job_out(job: Job, children: list[int], parent_kind: str | None = None) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "step_key": job.step_key,
            "label": job_label(job.kind, job.step_key, parent_kind), "status": job.status, "progress": job.progress or {},
            "error": job.error, "spec": job.spec or {}, "run_id": job.run_id, "parent_id": job.parent_id,
            "children": children, "depends_on_id": job.depends_on_id,
            "group_job_id": job.group_job_id, "seq": job.seq, "attempts": job.attempts,
            "worker": job.worker, "cancel_requested": job.cancel_requested, "heartbeat_at": job.heartbeat_at,
            "result": job.result or {}, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "hidden": bool(job.hidden)}


def jobs_out(db: Session, jobs: Iterable[Job]) -> list[dict[str, Any]]:
    jobs = list(jobs)
    ids = [j.id for j in jobs]
    kids: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for cid, pid in db.execute(select(Job.id, Job.parent_id).where(Job.parent_id.in_(ids)).order_by(Job.seq)):
            kids[pid].append(cid)
    parent_ids = {j.parent_id for j in jobs if j.parent_id is not None}
    parent_kind = dict(db.execute(select(Job.id, Job.kind).where(Job.id.in_(parent_ids))).all()) if parent_ids else {}
    return [job_out(j, kids[j.id], parent_kind.get(j.parent_id)) for j in jobs]


def headline(run: Run) -> dict:
    h = run.headline or {}
    return {m: h.get(m) for m in (*METRICS, "acc_init", "acc_final", "delta_acc")}


def _pp(v: float) -> str:
    return f"{v:.2f}"


def attack_outcome(run: Run) -> dict[str, Any]:
    """Where the attack ended against its accuracy budget (SPEC §2), in numbers and in words.

    The "selected" state is the latest evaluated state within the budget on the full
    validation set; when none was, it is θ_init (step 0) and every "selected" result shows
    no attack. ``message`` says so (with the drops that ruled the evaluated states out), so
    no page presents θ_init as the attack's result; the final state is still measured and
    shown under "final". A run with no attack record (metrics alone, not started) has
    nulls. The α = 0 control is read the same way.
    """
    acc = run.accuracy or {}
    sel, final = acc.get("selected_step"), acc.get("steps")
    budget = acc.get("budget_pp")
    if budget is None:
        budget = (run.attack or {}).get("acc_budget_pp")
    over = bool(acc.get("over_budget"))
    is_init = sel is not None and int(sel) == 0 and final is not None and int(final) > 0
    message = None
    if is_init:
        evals = [e for e in (run.alpha_trajectory or []) if isinstance(e, dict) and e.get("step")]
        full = [e for e in evals if e.get("full_drop_pp") is not None]
        where = ""
        if full:
            where = (f" (drops {', '.join(_pp(e['full_drop_pp']) for e in full)} pp at steps "
                     f"{', '.join(str(e['step']) for e in full)})")
        elif evals and all(e.get("drop_pp") is not None for e in evals):
            where = (f" (drops {', '.join(_pp(e['drop_pp']) for e in evals)} pp on the evaluation subset at steps "
                     f"{', '.join(str(e['step']) for e in evals)})")
        budget_txt = f"the {budget:g} pp accuracy budget" if budget is not None else "the accuracy budget"
        message = (f"No evaluated state stayed within {budget_txt}{where}: the selected state is θ_init, so the "
                   "'selected' results show no attack.")
        init, last = acc.get("init"), acc.get("last")
        drop = f", a {_pp(init - last)} pp drop" if init is not None and last is not None else ""
        message += (f" The final state (step {final}{drop}{', over budget' if over else ''}) "
                    "is shown under 'final'.")
    return {"selected_step": None if sel is None else int(sel), "final_step": None if final is None else int(final),
            "selected_is_init": is_init, "final_over_budget": over,
            "budget_pp": None if budget is None else float(budget), "message": message}


def run_item(run: Run) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "status": run.status, "model": run.model.name if run.model else None,
            "model_id": run.model_id, "layers": list(run.layers or []), "attack_kind": run.attack_kind,
            "created_at": run.created_at, "finished_at": run.finished_at, "headline": headline(run),
            "job_id": run.job_id, "hidden": bool(run.hidden), "attack_outcome": attack_outcome(run)}


def _mean(xs) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else None


SYNTH = ("synthetic_clip_delta", "synthetic_transfer", "ns_agreement")


def run_synthetic(db: Session, run: Run) -> dict[str, dict] | None:
    """Fig. 3.7 in numbers: natural vs synthetic measures per unit and their means over attacked units."""
    if db.scalar(select(SyntheticImage.id).where(SyntheticImage.run_id == run.id).limit(1)) is None:
        return None
    out: dict[str, dict] = {}
    rows = db.execute(select(UnitResult.layer, UnitResult.unit, UnitResult.attacked, UnitResult.clip_delta,
                             *[getattr(UnitResult, m) for m in SYNTH])
                      .where(UnitResult.run_id == run.id).order_by(UnitResult.layer, UnitResult.unit)).all()
    for layer, unit, attacked, clip_delta, *synth in rows:
        if all(v is None for v in synth):
            continue
        out.setdefault(layer, {"units": []})["units"].append(
            {"unit": unit, "attacked": attacked, "natural_clip_delta": clip_delta, **dict(zip(SYNTH, synth))})
    for layer, d in out.items():
        att = [u for u in d["units"] if u["attacked"]] or d["units"]
        d["means"] = {m: _mean(u[m] for u in att) for m in ("natural_clip_delta", *SYNTH)}
    return out


def run_rows(db: Session, run: Run, synthetic: dict | None) -> list[dict]:
    """Table 3.1 rows: this run's states, then the α = 0 control's (state "control", its own run_id)."""
    rows = []
    for r in run.rows or []:
        row = {**r, "run_id": run.id, "over_budget": bool(r.get("over_budget"))}
        if synthetic and r.get("state") == "selected":
            layers = list(synthetic) if r.get("layer") == "all" else [r.get("layer")]
            units = [u for l in layers for u in (synthetic.get(l) or {}).get("units", []) if u["attacked"]]
            row["synthetic_clip_delta"] = _mean(u["synthetic_clip_delta"] for u in units)
        rows.append(row)
    control = db.get(Run, run.control_run_id) if run.control_run_id else None
    if control is not None:
        rows += [{**r, "state": "control", "run_id": control.id, "over_budget": bool(r.get("over_budget"))}
                 for r in control.rows or [] if r.get("state") == "selected"]
    return rows


def run_detail(db: Session, run: Run, read_only: bool) -> dict[str, Any]:
    synthetic = run_synthetic(db, run)
    return {"id": run.id, "name": run.name, "status": run.status, "model": run.model.name if run.model else None,
            "model_id": run.model_id, "attack": run.attack, "embedder": run.embedder,
            "embedder_warning": run.embedder_warning, "k_clip": run.k_clip, "layers": list(run.layers or []),
            "table": run.table or [], "rows": run_rows(db, run, synthetic), "control_run_id": run.control_run_id,
            "synthetic": synthetic, "accuracy": run.accuracy or {}, "alpha_trajectory": run.alpha_trajectory or [],
            "history": run.history or [], "pushup": run.pushup, "per_unit": run.per_unit or {},
            "clip_similarity": run.clip_similarity or {}, "layer_info": run.layer_info or {},
            "train_set_id": run.train_set_id, "val_set_id": run.val_set_id, "job_id": run.job_id,
            "error": run.error, "created_at": run.created_at, "finished_at": run.finished_at,
            "read_only": read_only, "hidden": bool(run.hidden), "attack_outcome": attack_outcome(run),
            "fv_target": run_fv_target(db, run)}


def _aims_at_targets(run: Run) -> bool:
    from fvaudit.engine.attack.kinds import ATTACK_KINDS

    k = ATTACK_KINDS.get(run.attack_kind or "")
    return bool(k and k.target_image)


def run_fv_target(db: Session, run: Run) -> dict | None:
    """A Slingshots run's FV→target aggregates per layer (its newest visualize job's)."""
    if not _aims_at_targets(run):
        return None
    job = db.scalar(select(Job).where(Job.run_id == run.id, Job.kind == "visualize", Job.status == "succeeded")
                    .order_by(Job.id.desc()).limit(1))
    layers = ((job.result or {}).get("layers") or {}) if job is not None else {}
    out = {l: v["fv_target"] for l, v in layers.items() if isinstance(v, dict) and v.get("fv_target")}
    return out or None


def unit_target(db: Session, run: Run, layer: str, unit: int) -> Artifact | None:
    """The target a run's attack aimed unit ``unit`` of ``layer`` at (its attack job's result)."""
    jobs = db.scalars(select(Job).where(Job.run_id == run.id, Job.kind == "attack", Job.status == "succeeded")
                      .order_by(Job.id.desc()))
    for job in jobs:
        targets = (job.result or {}).get("targets")
        if targets and layer in (job.result or {}).get("layers", []):
            aid = targets.get("units", {}).get(str(unit))
            return db.get(Artifact, aid) if aid is not None else None
    return None


def unit_fv_target(db: Session, run: Run, u: UnitResult) -> dict | None:
    """A Slingshots unit's target (its URL) and measures (the visualize job's, in ``extra``)."""
    if not _aims_at_targets(run):
        return None
    if unit_target(db, run, u.layer, u.unit) is None:
        return None
    got = dict((u.extra or {}).get("fv_target") or {})
    return {"target_url": f"{API}/runs/{run.id}/layers/{u.layer}/units/{u.unit}/target",
            "moved": got.pop("moved", None), "moved_by": got.pop("moved_by", None),
            "cross_check": got.pop("cross_check", None), "top_class": got.pop("top_class", None), "measures": got}


def unit_row(u: UnitResult) -> dict[str, Any]:
    return {"unit": u.unit, "attacked": u.attacked, "dead": u.dead, **{m: getattr(u, m) for m in (*METRICS, *SYNTH)}}


def topk_images(db: Session, entry: dict, share_id: int | None = None) -> dict[str, list[dict]]:
    sid = int(entry["image_set_id"])
    classes = classes_of(db, sid)
    out = {}
    for side in ("before", "after"):
        t = entry.get(side) or {}
        out[side] = [img(sid, i, lab, classes, s, share_id) for i, s, lab in
                     zip(t.get("ids", []), t.get("scores", []), t.get("labels", []))]
    return out


def _neighbour(sorted_units: list[int], unit: int, direction: int) -> int | None:
    import bisect

    if direction < 0:
        i = bisect.bisect_left(sorted_units, unit)
        return sorted_units[i - 1] if i > 0 else None
    i = bisect.bisect_right(sorted_units, unit)
    return sorted_units[i] if i < len(sorted_units) else None


def synthetic_url(image_id: int) -> str:
    return f"{API}/synthetic-images/{image_id}"


def unit_synthetic(db: Session, run_id: int, u: UnitResult, state: str = "selected") -> dict | None:
    """The unit's synthetic images: θ_init ("before") and an attack state ("after"), same seeds.

    "after" is ``state``'s images when the newest visualize job rendered that state, else the
    state it did render; ``after_state`` names it, so a page never labels one state's images
    with another's name."""
    imgs = db.execute(select(SyntheticImage.id, SyntheticImage.state, SyntheticImage.seed, SyntheticImage.objective,
                             SyntheticImage.steps, SyntheticImage.size, SyntheticImage.job_id)
                      .where(SyntheticImage.run_id == run_id, SyntheticImage.layer == u.layer,
                             SyntheticImage.unit == u.unit)
                      .order_by(SyntheticImage.job_id.desc(), SyntheticImage.seed)).all()
    if not imgs:
        return None
    newest = [i for i in imgs if i.job_id == imgs[0].job_id]
    rendered = [i.state for i in newest if i.state != "init"]
    after_state = state if state in rendered else (rendered[0] if rendered else None)
    return {"before": [{"url": synthetic_url(i.id), "seed": i.seed} for i in newest if i.state == "init"],
            "after": [{"url": synthetic_url(i.id), "seed": i.seed} for i in newest if i.state == after_state],
            "after_state": after_state,
            "objective": newest[0].objective, "steps": newest[0].steps, "size": newest[0].size,
            **{m: getattr(u, m) for m in SYNTH}}


STATES = ("selected", "final")


def unit_states(u: UnitResult) -> tuple[str, list[str]]:
    """(the state stored as "after", every state this unit row can show). A row written before
    the metrics job kept the other state's top-k has only its main state; one of a run without
    a final scan likewise."""
    extra = u.extra or {}
    main = extra.get("after_state") or "selected"
    have = {main}
    for entry in (u.topk or {}).values():
        have.update(st for st in STATES if st != main and isinstance(entry, dict) and st in entry)
    return main, [st for st in STATES if st in have]


def _labels_of(extra: dict, state: str) -> dict | None:
    """The unit's class-concept label before and in the state shown (issue 22); None for a run
    measured before labels existed."""
    labels = extra.get("labels") or {}
    if "before" not in labels or state not in labels:
        return None
    return {"before": labels["before"], "after": labels[state]}


def _scores_of(extra: dict, state: str) -> dict | None:
    """The unit's SemanticLens scores before and in the state shown (issue 22); None when not measured."""
    scores = extra.get("scores") or {}
    if "before" not in scores or state not in scores:
        return None
    return {"before": scores["before"], "after": scores[state]}


def unit_detail(db: Session, run: Run, u: UnitResult, read_only: bool, share_id: int | None = None,
                state: str | None = None) -> dict[str, Any]:
    """One unit in one state: "after" is the top-k (train and val), metrics, nearest units and
    Fig. 3.5 similarities of ``state`` (the stored main state when None). The caller checks
    that ``state`` is one of :func:`unit_states`."""
    info = (run.layer_info or {}).get(u.layer, {})
    n = int(info.get("units") or 0)
    attacked = sorted(int(x) for x in info.get("attacked", []))
    main, states = unit_states(u)
    state = state or main
    extra = u.extra or {}
    if state == main:
        metrics = {m: getattr(u, m) for m in METRICS}
        topk = {role: topk_images(db, entry, share_id) for role, entry in (u.topk or {}).items()}
        nearest, clip_self = u.nearest or {}, u.clip_self or {}
    else:
        got = (extra.get("states") or {}).get(state) or {}
        metrics = {m: got.get(m) for m in METRICS}
        topk = {role: topk_images(db, {"image_set_id": entry["image_set_id"], "before": entry.get("before"),
                                       "after": entry.get(state)}, share_id)
                for role, entry in (u.topk or {}).items() if state in entry}
        nearest = (extra.get("nearest") or {}).get(state) or {}
        clip_self = (extra.get("clip_self") or {}).get(state) or {}
    return {
        "unit": u.unit, "layer": u.layer, "attacked": u.attacked, "dead": u.dead,
        "state": state, "states": states,
        "metrics": metrics, "topk": topk, "nearest": nearest, "clip_self": clip_self,
        "synthetic": unit_synthetic(db, run.id, u, state),
        "labels": _labels_of(extra, state),
        "scores": _scores_of(extra, state),
        "fv_target": unit_fv_target(db, run, u),
        "prev_unit": u.unit - 1 if u.unit > 0 else None,
        "next_unit": u.unit + 1 if u.unit + 1 < n else None,
        "prev_attacked": _neighbour(attacked, u.unit, -1), "next_attacked": _neighbour(attacked, u.unit, 1),
        "read_only": read_only,
    }
