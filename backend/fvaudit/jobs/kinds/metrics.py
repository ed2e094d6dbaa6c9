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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session

from fvaudit.db.tables import (METRICS, ImageSet, Job, Run, UnitLabel, UnitResult, User, clean_json, finite, upsert,
                               utcnow)
from fvaudit.db.session import inserted
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, Embedder, Name, Strict, UniqueLayers
from fvaudit.jobs.validate import FieldError, check_embedder, check_layer, get_image_set, get_job, get_model

if TYPE_CHECKING:  # pragma: no cover
    from fvaudit.engine.data.images import ImageSet as EngineImageSet

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


def state_accuracy(acc: dict, state: str) -> dict:
    """measure_state's accuracy arguments for the selected or the final state of an attack."""
    if state == "selected":
        return {"acc": acc.get("final"), "step": acc.get("selected_step"), "over_budget": False}
    return {"acc": acc.get("last"), "step": acc.get("steps"), "over_budget": bool(acc.get("over_budget"))}


@dataclass
class _Inputs:
    """What the metrics job reads: the states measured (the main one first), the attack job's
    result, the image sets and, per layer, the scans of θ_init and of every state."""

    states: list[str]
    layers: list[str]
    attack: dict | None
    val: "EngineImageSet"
    train: "EngineImageSet | None"
    init_val: dict
    init_train: dict | None
    final_val: dict[str, dict]
    final_train: dict[str, dict]

    @property
    def acc(self) -> dict:
        return dict((self.attack or {}).get("accuracy") or {})

    def decoys(self) -> tuple[int | None, list | None]:
        a = self.attack or {}
        from fvaudit.engine.attack.kinds import ATTACK_KINDS

        kind = ATTACK_KINDS.get(a.get("kind") or "")
        if kind is not None and kind.decoy and a.get("decoy_class") is not None:
            return int(a["decoy_class"]), a.get("decoy_ids")
        return None, None


def run_metrics(spec: MetricsSpec, ctx) -> dict:
    from fvaudit.engine.measure.embedders import make_topk_embedder

    ctx.reporter.stage("load scans")
    inp = _load_inputs(spec, ctx)
    topk_embedding = make_topk_embedder(spec.embedder, inp.val, ctx.cache_dir, ctx.device, ctx.reporter)
    if topk_embedding is not None and topk_embedding.warning:
        ctx.log(f"note: {topk_embedding.warning}")
    measured = _measure_states(spec, inp, topk_embedding, ctx)
    units = _unit_results(spec, inp, measured, topk_embedding.embed if topk_embedding else None, ctx,
                          clip_dissect=_ClipDissect.open(inp, topk_embedding, ctx))
    rows = _table_rows(spec, inp, measured, units)
    ctx.reporter.stage("store results")
    results = _RunResults(rows, units, _pushup_summary(spec, inp, measured), inp.acc,
                          topk_embedding.id if topk_embedding else None,
                          topk_embedding.warning if topk_embedding else None)
    headline = _store(spec, ctx, inp, results)
    ctx.log(f"metrics stored for {len(units.rows)} units of {len(inp.layers)} layer(s), state(s) "
            f"{', '.join(inp.states)}; embedder {results.embedder_id}")
    return {"layers": inp.layers, "units": len(units.rows), "embedder": results.embedder_id, "states": inp.states,
            "headline": clean_json(headline)}


def _load_inputs(spec: MetricsSpec, ctx) -> _Inputs:
    from fvaudit.jobs.common import layer_scan, load_scan, open_db_image_set

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
        val = open_db_image_set(db, db.get(ImageSet, spec.val_set_id))
        train = open_db_image_set(db, db.get(ImageSet, spec.train_set_id)) if spec.train_set_id else None
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

        return _Inputs(states, layers, attack, val, train, by_layer(before_val), by_layer(before_train),
                       {s: by_layer(r) for s, r in after_val.items()}, {s: by_layer(r) for s, r in after_train.items()})


def _measure_states(spec: MetricsSpec, inp: _Inputs, topk_embedding, ctx) -> dict:
    """Every state measured against θ_init (:func:`~fvaudit.engine.audit.measure_state`)."""
    from fvaudit.engine.audit import Measuring, StateFacts, StateScans, measure_state

    how = Measuring(spec.k_clip, topk_embedding.embed if topk_embedding else None,
                    topk_embedding.id if topk_embedding else None, inp.val.labels,
                    inp.train.labels if inp.train is not None else None)
    acc, attack = inp.acc, inp.attack or {}
    decoy_class, decoy_ids = inp.decoys()
    measured = {}
    for st in inp.states:
        ctx.check_cancel()
        ctx.reporter.stage(f"metrics ({st})", total=None)
        facts = StateFacts(st, attack.get("attacked"), attack.get("dead"), acc_init=acc.get("init"),
                           acc_n_images=acc.get("n_images"), decoy_class=decoy_class, decoy_ids=decoy_ids,
                           **state_accuracy(acc, st))
        scans = StateScans(inp.init_val, inp.final_val[st], inp.init_train, inp.final_train.get(st))
        measured[st] = measure_state(inp.layers, scans, facts, how)
    return measured


@dataclass
class _Units:
    rows: list[dict]
    per_unit_hist: dict
    clip_sim: dict
    layer_info: dict
    #: (state, layer or "all") → the attacked units' label flip rate (issue 22)
    label_flips: dict = field(default_factory=dict)


@dataclass
class _ClipDissect:
    """CLIP-Dissect (issue 22, :mod:`fvaudit.engine.measure.clip_dissect`): the validation images'
    CLIP cosines with the concept vocabulary, computed once per job when a real CLIP (image and
    text towers) is the embedder; ``why`` says why not otherwise (offline: the stand-in has no
    text tower), and no CLIP-Dissect label is stored."""

    similarity: np.ndarray | None
    concepts: list[str]
    why: str | None

    @classmethod
    def open(cls, inp: "_Inputs", topk_embedding, ctx) -> "_ClipDissect":
        from fvaudit.engine.measure import clip_dissect as cd

        embedder = topk_embedding.embedder if topk_embedding is not None else None
        why = cd.unavailable_reason(embedder)
        if why is not None:
            ctx.log(f"note: CLIP-Dissect labels unavailable: {why}")
            return cls(None, [], why)
        ctx.reporter.stage("CLIP-Dissect: embed the validation images and the concepts")
        concepts = cd.concept_vocabulary(list(inp.val.class_names))
        ids = np.asarray(inp.val.ids)
        images = np.asarray(topk_embedding.embed(ids[None, :]), dtype=np.float64)[0]        # cached per image
        text = np.asarray(embedder.embed_text(concepts), dtype=np.float64)
        return cls(images @ text.T, concepts, None)

    def labels(self, inp: "_Inputs", layer: str, dead) -> dict | None:
        """Every unit's CLIP-Dissect label before and in each state, from the scans' validation scores."""
        from fvaudit.engine.measure.clip_dissect import labels_from_similarity

        if self.similarity is None:
            return None
        scans = {"before": inp.init_val[layer], **{st: inp.final_val[st][layer] for st in inp.states}}
        return {st: labels_from_similarity(self.similarity, np.asarray(sc.scores), self.concepts, dead=dead)
                for st, sc in scans.items()}


def _unit_results(spec: MetricsSpec, inp: _Inputs, measured: dict, embed, ctx,
                  clip_dissect: "_ClipDissect | None" = None) -> _Units:
    """Every unit's row (its top-k in each state, its metrics, nearest units, Fig. 3.5
    similarities, its label before and in each state), the histograms' values, each layer's
    unit counts and the attacked units' label flip rates."""
    from fvaudit.engine.measure.labels import label_flip_rate

    out = _Units([], {}, {}, {})
    main_state = inp.states[0]
    pooled: dict[str, tuple[list, list]] = {st: ([], []) for st in inp.states}
    for layer in inp.layers:
        ctx.check_cancel()
        lm = measured[main_state].metrics[layer]
        labels = _labels(inp, layer, lm.dead)
        clip_labels = clip_dissect.labels(inp, layer, lm.dead) if clip_dissect is not None else None
        for st in inp.states:
            before, after = ([labels["before"][u] for u in lm.attacked], [labels[st][u] for u in lm.attacked])
            out.label_flips[(st, layer)] = label_flip_rate(before, after, inp.decoys()[0])
            pooled[st][0].extend(before)
            pooled[st][1].extend(after)
        self_sim, other_sim = _clip_self(spec, inp, layer, lm, embed)
        scores = _scores(spec, inp, layer, lm, embed)
        if self_sim:
            out.clip_sim[layer] = [{"unit": u, **self_sim[u]} for u in lm.units if u in set(lm.attacked)]
        att, dead_set = set(lm.attacked), set(lm.dead)
        for u in range(inp.init_val[layer].units):
            out.rows.append({"layer": layer, "unit": u, "attacked": u in att, "dead": u in dead_set,
                             **{m: finite(lm.per_unit.get(m, {}).get(u)) for m in METRICS},
                             "topk": clean_json(_unit_topk(spec, inp, layer, u)),
                             "nearest": clean_json(lm.nearest.get(u, {})),
                             "clip_self": clean_json(self_sim.get(u, {})),
                             "extra": clean_json({**_other_states(inp, measured, layer, u, other_sim),
                                                  "labels": {k: v[u].to_json() for k, v in labels.items()},
                                                  **({"scores": scores[u]} if u in scores else {}),
                                                  **({"labels_clip": {k: v[u].to_json() for k, v in clip_labels.items()}}
                                                     if clip_labels else {})})})
        for m in METRICS:
            out.per_unit_hist.setdefault(layer, {})[m] = ([finite(lm.per_unit[m].get(u)) for u in lm.attacked]
                                                          if m in lm.per_unit else [])
        out.layer_info[layer] = {"units": inp.init_val[layer].units, "attacked": lm.attacked, "dead": lm.dead,
                                 "live": len(lm.units), "n_images": lm.extra.get("n_images"),
                                 "clip_dissect": ("labelled" if clip_labels else
                                                  f"unavailable: {clip_dissect.why}" if clip_dissect else None)}
    for st, (before, after) in pooled.items():
        out.label_flips[(st, "all")] = label_flip_rate(before, after, inp.decoys()[0])
    return out


def _labels(inp: _Inputs, layer: str, dead) -> dict:
    """Every unit's class-concept label (issue 22) from its validation top-k, under θ_init
    ("before") and in each measured state."""
    from fvaudit.engine.measure.labels import class_concept_labels

    names = list(inp.val.class_names)
    label = lambda scan: class_concept_labels(scan.topk_ids, inp.val.labels, names, dead=dead)  # noqa: E731
    return {"before": label(inp.init_val[layer]), **{st: label(inp.final_val[st][layer]) for st in inp.states}}


def _scores(spec: MetricsSpec, inp: _Inputs, layer: str, lm, embed) -> dict[int, dict]:
    """Every live unit's SemanticLens scores (issue 22) of its validation top-k embeddings, before
    and in each state: clarity, polysemanticity and redundancy (against the layer's other live
    units), on the embedder in use (the run says which). Empty without an embedder."""
    from fvaudit.engine.measure.labels import clarity, polysemanticity, redundancy

    k = spec.k_clip
    if embed is None or len(lm.units) < 2 or k < 2:
        return {}
    scans = {"before": inp.init_val[layer], **{st: inp.final_val[st][layer] for st in inp.states}}
    out: dict[int, dict] = {u: {} for u in lm.units}
    for st, sc in scans.items():
        e = np.asarray(embed(sc.topk_ids[lm.units, :k]), dtype=np.float64)
        vals = {"clarity": clarity(e), "polysemanticity": polysemanticity(e), "redundancy": redundancy(e)}
        for c, u in enumerate(lm.units):
            out[u][st] = {m: finite(v[c]) for m, v in vals.items()}
    return out


def _clip_self(spec: MetricsSpec, inp: _Inputs, layer: str, lm, embed) -> tuple[dict, dict]:
    """C^{init,init}_jj and C^{init,state}_jj (Fig. 3.5) of every live unit, from the cached
    embeddings: the main state's, and every other state's by state."""
    from fvaudit.engine import measure

    others = inp.states[1:]
    if embed is None or len(lm.units) <= 1:
        return {}, {st: {} for st in others}
    k = spec.k_clip
    e_i = embed(inp.init_val[layer].topk_ids[lm.units, :k])
    pre = np.diag(measure.set_similarity(e_i, e_i))

    def against(state: str) -> dict[int, dict]:
        e_s = embed(inp.final_val[state][layer].topk_ids[lm.units, :k])
        post = np.diag(measure.set_similarity(e_i, e_s))
        return {u: {"pre": finite(pre[c]), "post": finite(post[c])} for c, u in enumerate(lm.units)}

    return against(inp.states[0]), {st: against(st) for st in others}


def _unit_topk(spec: MetricsSpec, inp: _Inputs, layer: str, u: int) -> dict:
    """A unit's top-k before and after on each set; every other state's beside the main one
    ("after"), so the unit page can show either state (GET .../units/{unit}?state=final)."""
    main = inp.states[0]
    iv, fv = inp.init_val[layer], inp.final_val[main][layer]
    topk = {"val": {"image_set_id": spec.val_set_id,
                    "before": _topk_entry(iv.topk_ids[u], iv.topk_scores[u], inp.val.labels),
                    "after": _topk_entry(fv.topk_ids[u], fv.topk_scores[u], inp.val.labels)}}
    it, ft = (inp.init_train or {}).get(layer), (inp.final_train.get(main) or {}).get(layer)
    if it is not None and ft is not None and inp.train is not None:
        topk["train"] = {"image_set_id": spec.train_set_id,
                         "before": _topk_entry(it.topk_ids[u], it.topk_scores[u], inp.train.labels),
                         "after": _topk_entry(ft.topk_ids[u], ft.topk_scores[u], inp.train.labels)}
    for st in inp.states[1:]:
        ov = inp.final_val[st][layer]
        topk["val"][st] = _topk_entry(ov.topk_ids[u], ov.topk_scores[u], inp.val.labels)
        ot = (inp.final_train.get(st) or {}).get(layer)
        if "train" in topk and ot is not None:
            topk["train"][st] = _topk_entry(ot.topk_ids[u], ot.topk_scores[u], inp.train.labels)
    return topk


def _other_states(inp: _Inputs, measured: dict, layer: str, u: int, other_sim: dict) -> dict:
    """A unit's metrics, nearest units and Fig. 3.5 similarities in every state but the main one."""
    others = inp.states[1:]
    return {"states": {st: {m: finite(measured[st].metrics[layer].per_unit.get(m, {}).get(u)) for m in METRICS}
                       for st in others},
            "after_state": inp.states[0],
            "nearest": {st: measured[st].metrics[layer].nearest.get(u, {}) for st in others},
            "clip_self": {st: other_sim[st].get(u, {}) for st in others}}


def _table_rows(spec: MetricsSpec, inp: _Inputs, measured: dict, units: "_Units") -> list[dict]:
    """Table 3.1: a row per layer and state (and an ``all`` row for several layers), with counts."""
    rows = []
    for st in inp.states:
        ms = measured[st]
        for row in ms.rows(spec.name or "run"):
            ls = inp.layers if row.layer == "all" else [row.layer]
            layer_info, flips = units.layer_info, units.label_flips.get((st, row.layer), {})
            rows.append({**row.to_json(),
                         "label_flip_rate": flips.get("flip_rate"), "label_decoy_rate": flips.get("decoy_rate"),
                         "label_decoy_rate_before": flips.get("decoy_rate_before"),
                         "n_units": sum(layer_info[l]["units"] for l in ls),
                         "n_attacked": sum(len(ms.metrics[l].attacked) for l in ls),
                         "n_dead": sum(len(ms.metrics[l].dead) for l in ls),
                         "n_images": ms.metrics[ls[0]].extra.get("n_images"),
                         "train_topk_overlap": ms.train_overlap.get(row.layer) if row.layer != "all" else None,
                         **{f"{m}_n_nan": sum(int(ms.metrics[l].aggregates[m].get("n_nan", 0)) for l in ls
                                              if m in ms.metrics[l].aggregates) for m in METRICS}})
    return rows


def _pushup_summary(spec: MetricsSpec, inp: _Inputs, measured: dict) -> dict | None:
    decoy_class, _ = inp.decoys()
    main = measured[inp.states[0]]
    if decoy_class is None or not main.pushup:
        return None
    names = inp.val.class_names
    pushup = {"decoy_class": decoy_class, "k": spec.k_clip,
              "decoy_class_name": names[decoy_class] if decoy_class < len(names) else None, **main.pushup}
    if "final" in measured and inp.states[0] != "final":
        pushup["final"] = measured["final"].pushup
    return pushup


@dataclass
class _RunResults:
    rows: list[dict]
    units: _Units
    pushup: dict | None
    acc: dict
    embedder_id: str | None
    embedder_warning: str | None


def label_rows(run_id: int, model_id: int | None, unit_rows: list[dict]) -> list[dict]:
    """The ``unit_labels`` rows of a run (issue 22): every live unit's class-concept label in each
    state (``before`` = θ_init), whether it differs from the one before, for the label search."""
    out = []
    for r in unit_rows:
        extra = r.get("extra") or {}
        labels = extra.get("labels") or {}
        before = (labels.get("before") or {}).get("label")
        for state, lab in labels.items():
            if not lab or lab.get("label") is None:
                continue                                   # a dead unit has no label
            name = str(lab.get("name") or lab["label"])
            out.append({"run_id": run_id, "model_id": model_id, "layer": r["layer"], "unit": r["unit"],
                        "state": state, "describer": "class-concept", "label": name, "label_key": name.lower(),
                        "class_index": lab["label"], "score": finite(lab.get("share")),
                        "p_value": finite(lab.get("p_value")), "attacked": bool(r.get("attacked")),
                        "changed": state != "before" and lab["label"] != before})
        clip = extra.get("labels_clip") or {}             # CLIP-Dissect, when a real CLIP labelled the run
        clip_before = (clip.get("before") or {}).get("concept")
        for state, lab in clip.items():
            if not lab or lab.get("concept") is None:
                continue
            out.append({"run_id": run_id, "model_id": model_id, "layer": r["layer"], "unit": r["unit"],
                        "state": state, "describer": "clip-dissect", "label": lab["concept"],
                        "label_key": lab["concept"].lower(), "class_index": None, "score": finite(lab.get("score")),
                        "p_value": None, "attacked": bool(r.get("attacked")),
                        "changed": state != "before" and lab["concept"] != clip_before})
    return out


def _store(spec: MetricsSpec, ctx, inp: _Inputs, res: _RunResults) -> dict:
    """Upsert the unit rows and write the run's tables; returns the headline."""
    main_rows = [r for r in res.rows if r["state"] == inp.states[0]]
    headline_src = next((r for r in main_rows if r["layer"] == "all"), main_rows[0] if main_rows else {})
    headline = {m: headline_src.get(m) for m in METRICS}
    headline.update({"acc_init": res.acc.get("init"), "acc_final": res.acc.get("final"),
                     "delta_acc": res.acc.get("delta")})
    with ctx.session() as db:
        run = db.get(Run, ctx.run_id) if ctx.run_id is not None else None
        if run is None:
            raise RuntimeError("metrics job has no run to write into")
        for r in res.units.rows:
            r["run_id"] = run.id
        upsert(db, UnitResult, res.units.rows, ("run_id", "layer", "unit"),
               update=("attacked", "dead", *METRICS, "topk", "nearest", "clip_self", "extra"))
        upsert(db, UnitLabel, label_rows(run.id, run.model_id, res.units.rows),
               ("run_id", "layer", "unit", "state", "describer"),
               update=("model_id", "label", "label_key", "class_index", "score", "p_value", "attacked", "changed"))
        run.rows = clean_json(res.rows)
        run.table = clean_json([r for r in main_rows if r["layer"] != "all"])
        run.headline = clean_json(headline)
        run.per_unit = clean_json(res.units.per_unit_hist)
        run.clip_similarity = clean_json(res.units.clip_sim)
        info = dict(run.layer_info or {})
        for l, v in res.units.layer_info.items():
            info[l] = {**info.get(l, {}), **v}
        run.layer_info = clean_json(info)
        run.layers = list(dict.fromkeys(list(run.layers or []) + inp.layers))
        run.embedder = res.embedder_id
        run.embedder_warning = res.embedder_warning
        run.k_clip = spec.k_clip
        run.pushup = clean_json(res.pushup)
        if not run.accuracy and res.acc:
            run.accuracy = clean_json(res.acc)
        run.finished_at = utcnow()
    return headline
