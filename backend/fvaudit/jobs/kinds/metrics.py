"""Job kind ``metrics``: measure an attack from stored scans (SPEC §3), write per-unit rows.

The θ_init scan is compared with the scan of the selected state (the latest within the
accuracy budget) and, when given, with the scan of the final state, so no result is
silently dropped (SPEC §2): the run's ``rows`` hold a ``selected`` and a ``final`` row per
layer (the final flagged ``over_budget`` when its drop exceeds the budget), plus an
``all`` row per state (mean over every attacked unit of every layer) when the run
attacked more than one layer. Dead units are those of the θ_init training-set scan
(SPEC §1); push-up success is reported with its θ_init baseline.

Each unit row keeps the main state's top-k as ``after`` and every other measured state's
beside it (``topk[split]["final"]``), with that state's metrics, nearest units and Fig. 3.5
similarities in ``extra`` (``states``, ``nearest``, ``clip_self``; ``after_state`` names the
main one), so a unit page can show either state.

Unit rows are upserted on ``(run, layer, unit)``: the columns a ``visualize`` job wrote
(synthetic measures; images live in ``synthetic_images``) are never touched here.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session

from fvaudit.db.tables import METRICS, ImageSet, Job, Run, UnitResult, User, clean_json, finite, upsert, utcnow
from fvaudit.db.session import inserted
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, Embedder, Name, Strict, UniqueLayers
from fvaudit.jobs.validate import FieldError, check_embedder, check_layer, get_image_set, get_job, get_model

STATES = ("selected", "final")


class MetricsSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"before_scan_job_id": 3, "after_scan_job_id": 5, "val_set_id": 2, "train_set_id": 1,
         "attack_job_id": 4, "k_clip": 5, "embedder": "auto"}]})
    name: Name | None = None
    before_scan_job_id: DbId = Field(description="scan of θ_init")
    after_scan_job_id: DbId = Field(description="scan of the attack's result (its selected state by default)")
    final_scan_job_id: DbId | None = Field(None, description="scan of the attack's final state, measured too")
    after_state: Literal["selected", "final"] = Field("selected", description="which state after_scan_job_id scanned")
    val_set_id: DbId = Field(description="D_τ: the image set the metrics rank over (in both scans)")
    train_set_id: DbId | None = Field(None, description="also report top-k before/after on this set")
    attack_job_id: DbId | None = Field(None, description="attack whose attacked/dead units and accuracy to report")
    layers: UniqueLayers | None = Field(None, min_length=1, max_length=64)
    k_clip: int = Field(5, gt=0, le=100)
    embedder: Embedder = "auto"


def check_metrics(db: Session, user: User, spec: MetricsSpec) -> MetricsSpec:
    L = ("spec",)
    before = get_job(db, user, spec.before_scan_job_id, L + ("before_scan_job_id",), ("scan",))
    after = get_job(db, user, spec.after_scan_job_id, L + ("after_scan_job_id",), ("scan",))
    scans = [("before_scan_job_id", before), ("after_scan_job_id", after)]
    if spec.final_scan_job_id is not None:
        scans.append(("final_scan_job_id", get_job(db, user, spec.final_scan_job_id, L + ("final_scan_job_id",),
                                                   ("scan",))))
    get_image_set(db, spec.val_set_id, L + ("val_set_id",))
    for name, j in scans:
        if spec.val_set_id not in j.spec.get("image_set_ids", []):
            raise FieldError(L + (name,), f"scan job {j.id} did not scan image set {spec.val_set_id}")
        if spec.train_set_id is not None and spec.train_set_id not in j.spec.get("image_set_ids", []):
            raise FieldError(L + ("train_set_id",), f"scan job {j.id} did not scan image set {spec.train_set_id}")
        if j.spec.get("model_id") != before.spec.get("model_id"):
            raise FieldError(L + (name,), "the scans are of different models")
    common = [l for l in before.spec.get("layers", []) if all(l in j.spec.get("layers", []) for _, j in scans)]
    update: dict = {}
    if spec.layers is not None:
        model = get_model(db, before.spec["model_id"], L + ("before_scan_job_id",))
        names = []
        for i, name in enumerate(spec.layers):
            info = check_layer(model, name, L + ("layers", i))
            if info["name"] not in common:
                raise FieldError(L + ("layers", i), f"layer {info['name']} is not in every scan")
            names.append(info["name"])
        update["layers"] = names
    elif not common:
        raise FieldError(L + ("after_scan_job_id",), "the scans have no layer in common")
    if spec.attack_job_id is not None:
        get_job(db, user, spec.attack_job_id, L + ("attack_job_id",), ("attack",))
    k_scan = min(j.spec.get("k", 0) for _, j in scans)
    if spec.k_clip > k_scan:
        raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than the scans' top-{k_scan}")
    update["embedder"] = check_embedder(spec.embedder, L + ("embedder",))
    return spec.model_copy(update=update)


@register_kind
class MetricsKind(JobKind):
    name = "metrics"
    title = "metrics"
    description = "SPEC §3 metrics of an attack from stored scans, per unit, per layer and per state"
    spec = MetricsSpec

    def check(self, db, user, spec):
        return check_metrics(db, user, spec)

    def depends_on(self, spec: MetricsSpec) -> list[int]:
        return [i for i in (spec.before_scan_job_id, spec.after_scan_job_id, spec.final_scan_job_id,
                            spec.attack_job_id) if i is not None]

    def run_for(self, db, user, spec: MetricsSpec) -> Run:
        attack_job = db.get(Job, spec.attack_job_id) if spec.attack_job_id else None
        if attack_job is not None and attack_job.run_id is not None:
            return db.get(Run, attack_job.run_id)
        before = db.get(Job, spec.before_scan_job_id)
        run = Run(name=spec.name or "metrics", owner_id=user.id, model_id=before.spec["model_id"], status="queued",
                  layers=list(spec.layers or []), train_set_id=spec.train_set_id, val_set_id=spec.val_set_id,
                  k_clip=spec.k_clip)
        return inserted(db, run)

    def run(self, spec: MetricsSpec, ctx) -> dict:
        return run_metrics(spec, ctx)


def _topk_entry(ids: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"ids": [int(i) for i in ids], "scores": [finite(s) for s in scores],
            "labels": [int(labels[int(i)]) for i in ids]}


def _mean(values) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(xs)) if xs else None


def state_accuracy(acc: dict, state: str) -> dict:
    """measure_state's accuracy arguments for the selected or the final state of an attack."""
    if state == "selected":
        return {"acc": acc.get("final"), "step": acc.get("selected_step"), "over_budget": False}
    return {"acc": acc.get("last"), "step": acc.get("steps"), "over_budget": bool(acc.get("over_budget"))}


def run_metrics(spec: MetricsSpec, ctx) -> dict:
    from fvaudit.engine import measure
    from fvaudit.engine.audit import measure_state
    from fvaudit.engine.measure.embedders import make_topk_embedder
    from fvaudit.jobs.common import layer_scan, load_scan, open_db_image_set

    ctx.reporter.stage("load scans")
    state_jobs = {spec.after_state: spec.after_scan_job_id}
    if spec.final_scan_job_id is not None:
        state_jobs["final"] = spec.final_scan_job_id
    states = [s for s in STATES if s in state_jobs]
    with ctx.session() as db:
        before_val = load_scan(db, spec.before_scan_job_id, spec.val_set_id)
        after_val = {s: load_scan(db, j, spec.val_set_id) for s, j in state_jobs.items()}
        before_train, after_train = None, {}
        if spec.train_set_id is not None:
            before_train = load_scan(db, spec.before_scan_job_id, spec.train_set_id)
            after_train = {s: load_scan(db, j, spec.train_set_id) for s, j in state_jobs.items()}
        val_row = db.get(ImageSet, spec.val_set_id)
        train_row = db.get(ImageSet, spec.train_set_id) if spec.train_set_id else None
        val = open_db_image_set(db, val_row)
        train = open_db_image_set(db, train_row) if train_row is not None else None
        attack = None
        if spec.attack_job_id is not None:
            aj = db.get(Job, spec.attack_job_id)
            if aj is None or aj.status != "succeeded":
                raise RuntimeError(f"attack job {spec.attack_job_id} has not succeeded")
            attack = dict(aj.result or {})
        layers = spec.layers or [sl.layer for sl in before_val.layers
                                 if all(sl.layer in {x.layer for x in s.layers} for s in after_val.values())]

        def by_layer(scan_row):
            return {layer: layer_scan(ctx.store, scan_row, layer) for layer in layers} if scan_row else None

        init_val, init_train = by_layer(before_val), by_layer(before_train)
        final_val = {s: by_layer(r) for s, r in after_val.items()}
        final_train = {s: by_layer(r) for s, r in after_train.items()}
    topk_embedding = make_topk_embedder(spec.embedder, val, ctx.cache_dir, ctx.device, ctx.reporter)
    embed, emb_id, warning = ((topk_embedding.embed, topk_embedding.id, topk_embedding.warning)
                              if topk_embedding else (None, None, None))
    if warning:
        ctx.log(f"note: {warning}")
    k_clip = spec.k_clip
    acc = dict((attack or {}).get("accuracy") or {})
    main_state = states[0]
    decoy_class = decoy_ids = None
    if attack is not None and attack.get("kind") == "push_up" and attack.get("decoy_class") is not None:
        decoy_class, decoy_ids = int(attack["decoy_class"]), attack.get("decoy_ids")
    measured = {}
    for st in states:
        ctx.check_cancel()
        ctx.reporter.stage(f"metrics ({st})", total=None)
        measured[st] = measure_state(
            layers, (attack or {}).get("attacked"), init_val, final_val[st], init_train, final_train.get(st),
            k_clip=k_clip, embed_topk=embed, embedder_id=emb_id, dead=(attack or {}).get("dead"),
            val_labels=val.labels, train_labels=train.labels if train is not None else None,
            decoy_class=decoy_class, decoy_ids=decoy_ids, state=st, acc_init=acc.get("init"),
            acc_n_images=acc.get("n_images"), **state_accuracy(acc, st))
    main = measured[main_state]
    rows, per_unit_hist, clip_sim, layer_info = [], {}, {}, {}
    unit_rows: list[dict] = []
    for layer in layers:
        ctx.check_cancel()
        lm = main.metrics[layer]
        iv, it = init_val[layer], (init_train or {}).get(layer)
        fv, ft = final_val[main_state][layer], (final_train.get(main_state) or {}).get(layer)
        n_units = iv.units
        others = [st for st in states if st != main_state]
        # C^{init,init}_jj and C^{init,state}_jj (Fig. 3.5), from the cached embeddings: the
        # main state's in clip_self, every other state's in extra["clip_self"][state]
        self_sim: dict[int, dict] = {}
        other_sim: dict[str, dict[int, dict]] = {st: {} for st in others}
        if embed is not None and len(lm.units) > 1:
            e_i, e_f = embed(iv.topk_ids[lm.units, :k_clip]), embed(fv.topk_ids[lm.units, :k_clip])
            pre = np.diag(measure.set_similarity(e_i, e_i))
            post = np.diag(measure.set_similarity(e_i, e_f))
            self_sim = {u: {"pre": finite(pre[c]), "post": finite(post[c])} for c, u in enumerate(lm.units)}
            clip_sim[layer] = [{"unit": u, **self_sim[u]} for u in lm.units if u in set(lm.attacked)]
            for st in others:
                e_o = embed(final_val[st][layer].topk_ids[lm.units, :k_clip])
                post_o = np.diag(measure.set_similarity(e_i, e_o))
                other_sim[st] = {u: {"pre": finite(pre[c]), "post": finite(post_o[c])} for c, u in enumerate(lm.units)}
        att, dead_set = set(lm.attacked), set(lm.dead)
        for u in range(n_units):
            topk = {"val": {"image_set_id": spec.val_set_id,
                            "before": _topk_entry(iv.topk_ids[u], iv.topk_scores[u], val.labels),
                            "after": _topk_entry(fv.topk_ids[u], fv.topk_scores[u], val.labels)}}
            if it is not None and ft is not None and train is not None:
                topk["train"] = {"image_set_id": spec.train_set_id,
                                 "before": _topk_entry(it.topk_ids[u], it.topk_scores[u], train.labels),
                                 "after": _topk_entry(ft.topk_ids[u], ft.topk_scores[u], train.labels)}
            # every other state's top-k beside the main one ("after"), so the unit page can show
            # either state (GET .../units/{unit}?state=final)
            for st in others:
                ov = final_val[st][layer]
                topk["val"][st] = _topk_entry(ov.topk_ids[u], ov.topk_scores[u], val.labels)
                ot = (final_train.get(st) or {}).get(layer)
                if "train" in topk and ot is not None:
                    topk["train"][st] = _topk_entry(ot.topk_ids[u], ot.topk_scores[u], train.labels)
            other = {st: {m: finite(measured[st].metrics[layer].per_unit.get(m, {}).get(u)) for m in METRICS}
                     for st in others}
            extra = {"states": other, "after_state": main_state,
                     "nearest": {st: measured[st].metrics[layer].nearest.get(u, {}) for st in others},
                     "clip_self": {st: other_sim[st].get(u, {}) for st in others}}
            unit_rows.append({"layer": layer, "unit": u, "attacked": u in att, "dead": u in dead_set,
                              **{m: finite(lm.per_unit.get(m, {}).get(u)) for m in METRICS},
                              "topk": clean_json(topk), "nearest": clean_json(lm.nearest.get(u, {})),
                              "clip_self": clean_json(self_sim.get(u, {})), "extra": clean_json(extra)})
        for m in METRICS:
            per_unit_hist.setdefault(layer, {})[m] = ([finite(lm.per_unit[m].get(u)) for u in lm.attacked]
                                                      if m in lm.per_unit else [])
        layer_info[layer] = {"units": n_units, "attacked": lm.attacked, "dead": lm.dead, "live": len(lm.units),
                             "n_images": lm.extra.get("n_images")}
    for st in states:
        ms = measured[st]
        for row in ms.rows(spec.name or "run"):
            ls = layers if row.layer == "all" else [row.layer]
            rows.append({**row.to_json(), **{
                "n_units": sum(layer_info[l]["units"] for l in ls),
                "n_attacked": sum(len(ms.metrics[l].attacked) for l in ls),
                "n_dead": sum(len(ms.metrics[l].dead) for l in ls),
                "n_images": ms.metrics[ls[0]].extra.get("n_images"),
                "train_topk_overlap": ms.train_overlap.get(row.layer) if row.layer != "all" else None,
                **{f"{m}_n_nan": sum(int(ms.metrics[l].aggregates[m].get("n_nan", 0)) for l in ls
                                     if m in ms.metrics[l].aggregates) for m in METRICS}}})
    pushup = None
    if decoy_class is not None and main.pushup:
        pushup = {"decoy_class": decoy_class, "k": k_clip,
                  "decoy_class_name": val.class_names[decoy_class] if decoy_class < len(val.class_names) else None,
                  **main.pushup}
        if "final" in measured and main_state != "final":
            pushup["final"] = measured["final"].pushup
    main_rows = [r for r in rows if r["state"] == main_state]
    headline_src = next((r for r in main_rows if r["layer"] == "all"), main_rows[0] if main_rows else {})
    headline = {m: headline_src.get(m) for m in METRICS}
    headline.update({"acc_init": acc.get("init"), "acc_final": acc.get("final"), "delta_acc": acc.get("delta")})
    ctx.reporter.stage("store results")
    with ctx.session() as db:
        run = db.get(Run, ctx.run_id) if ctx.run_id is not None else None
        if run is None:
            raise RuntimeError("metrics job has no run to write into")
        for r in unit_rows:
            r["run_id"] = run.id
        upsert(db, UnitResult, unit_rows, ("run_id", "layer", "unit"),
               update=("attacked", "dead", *METRICS, "topk", "nearest", "clip_self", "extra"))
        run.rows = clean_json(rows)
        run.table = clean_json([r for r in main_rows if r["layer"] != "all"])
        run.headline = clean_json(headline)
        run.per_unit = clean_json(per_unit_hist)
        run.clip_similarity = clean_json(clip_sim)
        info = dict(run.layer_info or {})
        for l, v in layer_info.items():
            info[l] = {**info.get(l, {}), **v}
        run.layer_info = clean_json(info)
        run.layers = list(dict.fromkeys(list(run.layers or []) + layers))
        run.embedder = emb_id
        run.embedder_warning = warning
        run.k_clip = k_clip
        run.pushup = clean_json(pushup)
        if not run.accuracy and acc:
            run.accuracy = clean_json(acc)
        run.finished_at = utcnow()
    ctx.log(f"metrics stored for {len(unit_rows)} units of {len(layers)} layer(s), state(s) {', '.join(states)}; "
            f"embedder {emb_id}")
    return {"layers": layers, "units": len(unit_rows), "embedder": emb_id, "states": states,
            "headline": clean_json(headline)}
