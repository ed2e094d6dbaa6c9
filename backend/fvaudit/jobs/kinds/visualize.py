"""Job kind ``visualize``: synthetic feature visualizations of layers (SPEC §4), stored and measured.

Renders ``n_synth`` images per unit (seeds 0 .. n_synth − 1), batched over all units of
each layer (or the chosen ones), under θ_init and, with ``weights_from``, under an
attack's state with the same seeds, so a before/after pair differs only by the weights.
Every image becomes a PNG artifact and a ``synthetic_images`` row (objective, seed,
steps, size, its own activation). With an attack state it measures, per unit:

* synthetic CLIP-δ (CLIP-δ of SPEC §3 with the synthetic images as T_j),
* synthetic transfer (does the old image still drive the unit, each score divided by
  the unit's mean over the validation set under the same weights),
* natural–synthetic agreement of the audited state (top-k vs synthetic images),

and writes them into the run's unit rows (an upsert of those three columns only). It is
a step of every audit chain and runs alone on any model and layer: without
``weights_from`` it renders θ_init only, for the model's synthetic browse.

When an audit's attack ends with no evaluated state within the accuracy budget, its
"selected" state is θ_init itself (SPEC §2): rendering it would draw θ_init twice (10
minutes of the CPU demo for a before/after pair that cannot differ). The job then renders
the attack's **final** state instead, stores those images under ``state = "final"`` and
says so in its log and result (``state``, ``state_note``). Dead units (no activation on
the validation set) get no agreement or transfer values: there is nothing to agree with.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sqlalchemy import select
from pydantic import ConfigDict, Field, field_validator

from fvaudit.db.tables import Job, Model, Run, SyntheticImage, UnitResult, clean_json, finite, upsert
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, Embedder, PathStr, Strict, UniqueLayers, UnitIdx, WeightsRef
from fvaudit.jobs.validate import (FieldError, check_checkpoint_path, check_embedder, check_layer, get_image_set,
                                   get_job, get_model)

MEASURES = ("synthetic_clip_delta", "synthetic_transfer", "ns_agreement")


class VisualizeSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "layers": ["relu3"], "units": None, "n_synth": 4, "steps": 256, "objective": "score",
         "weights_from": None}]})
    model_id: DbId
    layers: UniqueLayers = Field(min_length=1, max_length=64)
    units: list[UnitIdx] | None = Field(None, min_length=1, max_length=65536,
                                        description="units to render (only with exactly one layer); null = all")
    n_synth: int = Field(4, ge=1, le=64, description="images per unit (seeds 0 .. n_synth − 1)")
    steps: int = Field(256, ge=1, le=100_000, description="gradient-ascent steps per image")
    objective: Literal["score", "channel_mean"] = Field("score", description="a_j of SPEC §1, or the channel mean "
                                                                             "(for layers that can be negative)")
    weights_from: WeightsRef | None = Field(None, description="also render an attack's state with the same seeds, "
                                                              "and measure the pair")
    checkpoint_path: PathStr | None = Field(None, description="θ_init from a checkpoint under an allowed root")
    val_set_id: DbId | None = Field(None, description="validation set: normalises synthetic transfer, gives the "
                                                      "natural top-k for the agreement")
    before_scan_job_id: DbId | None = Field(None, description="a scan of θ_init on val_set_id to reuse")
    after_scan_job_id: DbId | None = Field(None, description="a scan of the weights_from state on val_set_id")
    k_clip: int = Field(5, gt=0, le=100, description="natural top-k size of the agreement")
    embedder: Embedder = "auto"

    @field_validator("units")
    @classmethod
    def _units(cls, v, info):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("unit indices must be unique")
        if v is not None and len(info.data.get("layers") or []) != 1:
            raise ValueError("units can be chosen only for exactly one layer")
        return v


def check_visualize(db, user, spec: VisualizeSpec) -> VisualizeSpec:
    L = ("spec",)
    model = get_model(db, spec.model_id, L + ("model_id",))
    infos = [check_layer(model, name, L + ("layers", i)) for i, name in enumerate(spec.layers)]
    update: dict = {"layers": [i["name"] for i in infos]}
    if spec.units is not None:
        for i, u in enumerate(spec.units):
            if u >= infos[0]["units"]:
                raise FieldError(L + ("units", i), f"unit index {u} out of range for layer {infos[0]['name']}: it "
                                                   f"has {infos[0]['units']} units")
    if spec.weights_from is not None:
        j = get_job(db, user, spec.weights_from.job_id, L + ("weights_from", "job_id"), ("attack",))
        if j.spec.get("model_id") != spec.model_id:
            raise FieldError(L + ("weights_from", "job_id"), f"attack job {j.id} attacked model "
                                                             f"{j.spec.get('model_id')}, not {spec.model_id}")
    if spec.checkpoint_path is not None:
        update["checkpoint_path"] = check_checkpoint_path(spec.checkpoint_path, L + ("checkpoint_path",))
    if spec.val_set_id is not None:
        val = get_image_set(db, spec.val_set_id, L + ("val_set_id",))
        if spec.k_clip > val.size:
            raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than the validation set")
    for name in ("before_scan_job_id", "after_scan_job_id"):
        jid = getattr(spec, name)
        if jid is not None:
            if spec.val_set_id is None:
                raise FieldError(L + (name,), "a reused scan needs val_set_id")
            j = get_job(db, user, jid, L + (name,), ("scan",))
            if spec.val_set_id not in j.spec.get("image_set_ids", []):
                raise FieldError(L + (name,), f"scan job {j.id} did not scan image set {spec.val_set_id}")
    update["embedder"] = check_embedder(spec.embedder, L + ("embedder",))
    return spec.model_copy(update=update)


@register_kind
class VisualizeKind(JobKind):
    name = "visualize"
    title = "synthetic visualization"
    description = "synthetic images of every unit of layers under θ_init (and an attack's state), measured (SPEC §4)"
    spec = VisualizeSpec

    def check(self, db, user, spec):
        return check_visualize(db, user, spec)

    def depends_on(self, spec: VisualizeSpec) -> list[int]:
        ids = [spec.before_scan_job_id, spec.after_scan_job_id, spec.weights_from.job_id if spec.weights_from else None]
        return [i for i in ids if i is not None]

    def run_for(self, db, user, spec: VisualizeSpec) -> Run | None:
        if spec.weights_from is None:
            return None
        job = db.get(Job, spec.weights_from.job_id)
        return db.get(Run, job.run_id) if job is not None and job.run_id is not None else None

    def run(self, spec: VisualizeSpec, ctx) -> dict:
        return run_visualize(spec, ctx)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _val_means(scores: np.ndarray, units: list[int]) -> np.ndarray:
    """Each unit's mean score over the validation set (NaN rows of skipped images left out)."""
    s = np.asarray(scores, dtype=np.float64)[:, units]
    return np.nanmean(s, axis=0)


def _mean(xs) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


@dataclass
class _Inputs:
    """What a visualize job reads: the model row and its checkpoints (θ_init and the audited
    state), the validation set with its stored scans, and the run's attacked and dead units."""

    model_row: Model
    ckpt_init: object
    ckpt_after: object | None
    after_state: str | None
    state_note: str | None
    val: object | None
    val_name: str | None
    stored: dict[str, object]
    attacked: dict[str, set[int]]
    dead: dict[str, set[int]]
    #: Slingshots runs (SPEC §8.1): layer → unit → the file of the target its attack aimed at
    targets: dict[str, dict[int, str]] = field(default_factory=dict)


def run_visualize(spec: VisualizeSpec, ctx) -> dict:
    from fvaudit.engine.measure.embedders import make_topk_embedder
    from fvaudit.jobs.common import load_db_model

    inp = _load_inputs(spec, ctx)
    ctx.reporter.stage("load model")
    models = {"init": load_db_model(inp.model_row, inp.ckpt_init, ctx.device)}
    if inp.ckpt_after is not None:
        models["after"] = load_db_model(inp.model_row, inp.ckpt_after, ctx.device)
    topk_embedding = make_topk_embedder(spec.embedder, inp.val, ctx.cache_dir, ctx.device, ctx.reporter)
    if topk_embedding is not None and topk_embedding.warning:
        ctx.log(f"note: {topk_embedding.warning}")
    image_rows: list[dict] = []
    unit_measures: dict[str, dict[int, dict]] = {}
    unit_extra: dict[str, dict[int, dict]] = {}    # layer → unit → keys merged into UnitResult.extra
    summary: dict[str, dict] = {}
    for layer in [models["init"].layer(l).name for l in spec.layers]:
        ctx.check_cancel()
        info = models["init"].layer(layer)
        units = list(spec.units) if spec.units is not None else list(range(info.units))
        images, rows = _render_layer(spec, ctx, inp, models, layer, units)
        image_rows += rows
        measures = _measure_layer(spec, ctx, inp, models, layer, units, images, topk_embedding)
        dead_here = inp.dead.get(layer, set())
        per_unit = {int(u): {m: finite(measures[m][c]) if m in measures and int(u) not in dead_here else None
                             for m in MEASURES}
                    for c, u in enumerate(units)}
        unit_measures[layer] = per_unit
        att = inp.attacked.get(layer) or set(units)
        summary[layer] = {"units": len(units), "size": int(images["init"].shape[2]),
                          "means": {m: _mean(v[m] for u, v in per_unit.items() if u in att) for m in MEASURES}}
        if inp.targets.get(layer) and "after" in images:
            summary[layer]["fv_target"] = _fv_target(spec, ctx, inp, models, layer, units, images, topk_embedding,
                                                     measures, unit_extra.setdefault(layer, {}))
        ctx.log(f"synthesised {len(units)} units × {spec.n_synth} seeds of {layer} ({', '.join(images)}); "
                + ", ".join(f"{m} {v:.3f}" for m, v in summary[layer]["means"].items() if v is not None))
    _store(ctx, inp, image_rows, unit_measures, unit_extra)
    return {"layers": clean_json(summary), "images": len(image_rows),
            "embedder": topk_embedding.id if topk_embedding else None, "state": inp.after_state,
            "state_note": inp.state_note,
            "per_unit": clean_json({l: {str(u): v for u, v in pu.items()} for l, pu in unit_measures.items()})}


def _load_inputs(spec: VisualizeSpec, ctx) -> _Inputs:
    from fvaudit.db.tables import ImageSet
    from fvaudit.jobs.common import load_scan, open_db_image_set, resolve_weights

    with ctx.session() as db:
        model_row = db.get(Model, spec.model_id)
        if model_row is None:
            raise RuntimeError(f"model {spec.model_id} no longer exists")
        ckpt_init, _ = resolve_weights(db, ctx.store, model_row, None, spec.checkpoint_path)
        weights_from, state_note = _audited_state(spec, ctx, db)
        ckpt_after = resolve_weights(db, ctx.store, model_row, weights_from, None)[0] if weights_from else None
        val = val_name = None
        stored: dict[str, object] = {}      # reused scans of the validation set, by state
        if spec.val_set_id is not None:
            val_row = db.get(ImageSet, spec.val_set_id)
            val, val_name = open_db_image_set(db, val_row), val_row.name
            after_scan = spec.after_scan_job_id
            if state_note is not None:      # the given scan is of the selected state: use the chain's final scan
                me = db.get(Job, ctx.job_id)
                after_scan = db.scalar(select(Job.id).where(
                    Job.parent_id == me.parent_id, Job.step_key == "scan_final", Job.status == "succeeded")
                ) if me is not None and me.parent_id is not None else None
            for key, jid in (("init", spec.before_scan_job_id), ("after", after_scan)):
                if jid is not None:
                    stored[key] = load_scan(db, jid, spec.val_set_id)
        attacked: dict[str, set[int]] = {}
        dead: dict[str, set[int]] = {}
        targets: dict[str, dict[int, str]] = {}
        attack_job = db.get(Job, weights_from.job_id) if weights_from is not None else None
        got = ((attack_job.result or {}).get("targets") if attack_job is not None else None) or {}
        if got.get("units"):
            from fvaudit.db.tables import Artifact

            layer0 = (attack_job.result or {}).get("layers", [None])[0]
            targets[layer0] = {int(u): str(ctx.store.path(db.get(Artifact, a))) for u, a in got["units"].items()
                               if db.get(Artifact, a) is not None}
        if ctx.run_id is not None:
            info = db.get(Run, ctx.run_id).layer_info or {}
            attacked = {l: set(int(u) for u in v.get("attacked", [])) for l, v in info.items()}
            dead = {l: set(int(u) for u in v.get("dead", [])) for l, v in info.items()}
        db.expunge(model_row)
    return _Inputs(model_row, ckpt_init, ckpt_after, weights_from.state if weights_from is not None else None,
                   state_note, val, val_name, stored, attacked, dead, targets)


def _audited_state(spec: VisualizeSpec, ctx, db):
    """The attack state to render beside θ_init, and why it is not the one asked for: when the
    selected state is θ_init (no evaluated state stayed within the budget), its final state."""
    weights_from = spec.weights_from
    if weights_from is None or weights_from.state != "selected":
        return weights_from, None
    attack_job = db.get(Job, weights_from.job_id)
    acc = ((attack_job.result or {}).get("accuracy") or {}) if attack_job is not None else {}
    if acc.get("selected_step") != 0:
        return weights_from, None
    note = (f"no evaluated state of attack job {weights_from.job_id} stayed within its accuracy budget, so its "
            f"selected state is θ_init: rendering its final state (step {acc.get('steps')}) instead of θ_init twice")
    ctx.log(f"note: {note}")
    return weights_from.model_copy(update={"state": "final"}), note


def _render_layer(spec: VisualizeSpec, ctx, inp: _Inputs, models: dict, layer: str,
                  units: list[int]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Every unit's synthetic images in each state (SPEC §4), stored as PNG artifacts.
    Returns the images by state ([J, n, H, W, C] uint8) and their rows."""
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import synthesize_many

    seeds = list(range(spec.n_synth))
    cfg = SynthesisConfig(steps=spec.steps, objective=spec.objective, device=ctx.device)
    rendered = {}
    for state, model in models.items():
        ctx.reporter.stage(f"synthesise {layer} ({'θ_init' if state == 'init' else inp.after_state})")
        rendered[state] = synthesize_many(model, layer, units, seeds, cfg, ctx.reporter)
    images = {s: np.stack([r.images for r in res], axis=1) for s, res in rendered.items()}
    acts = {s: np.stack([r.activation for r in res], axis=1) for s, res in rendered.items()}
    size = int(images["init"].shape[2])
    ctx.reporter.stage(f"store {layer}")
    rows = []
    with ctx.session() as db:
        for s, imgs in images.items():
            row_state = "init" if s == "init" else inp.after_state
            for c, u in enumerate(units):
                for si, seed in enumerate(seeds):
                    art = ctx.store.put_bytes(db, png(imgs[c, si]), "image", ".png")
                    rows.append({"model_id": spec.model_id, "run_id": ctx.run_id, "job_id": ctx.job_id,
                                 "layer": layer, "unit": int(u), "state": row_state, "seed": int(seed),
                                 "objective": spec.objective, "steps": spec.steps, "size": size,
                                 "artifact_id": art.id, "activation": finite(acts[s][c, si])})
    return images, rows


def _measure_layer(spec: VisualizeSpec, ctx, inp: _Inputs, models: dict, layer: str, units: list[int],
                   images: dict[str, np.ndarray], topk_embedding) -> dict[str, np.ndarray]:
    """The synthetic measures of SPEC §4 (CLIP-δ of the renders, transfer, natural-synthetic
    agreement), each [J]; none without an embedder or with a single unit."""
    from fvaudit.engine.measure import synthetic
    from fvaudit.engine.scans.activations import scan
    from fvaudit.jobs.common import layer_scan

    if topk_embedding is None or len(units) <= 1:
        return {}
    J, n = len(units), spec.n_synth
    e = {}
    for s, im in images.items():
        ctx.reporter.stage(f"embed {layer} ({'θ_init' if s == 'init' else inp.after_state})", total=J * n)
        e[s] = synthetic.embed_images(topk_embedding.embedder, im.reshape(J * n, *im.shape[2:]),
                                      progress=lambda done, total: ctx.reporter.advance(done, total)).reshape(J, n, -1)
    ctx.reporter.stage(f"measure {layer}")
    measures: dict[str, np.ndarray] = {}
    if "after" in e:
        measures["synthetic_clip_delta"] = synthetic.synthetic_clip_delta(e["init"], e["after"])
    if inp.val is None:
        return measures
    scans = {}
    for key, model in models.items():
        if key in inp.stored:
            scans[key] = layer_scan(ctx.store, inp.stored[key], layer)
        else:
            ctx.reporter.stage(f"scan {inp.val_name} ({key})")
            scans[key] = scan(model, inp.val, [layer], k=spec.k_clip, device=ctx.device,
                              reporter=ctx.reporter).layers[layer]
    if "after" in images and spec.objective == "score":   # the scans' means are of a_j (SPEC §1)
        a_ii = synthetic.unit_scores_of_images(models["init"], layer, units, images["init"], "score", ctx.device)
        a_fi = synthetic.unit_scores_of_images(models["after"], layer, units, images["init"], "score", ctx.device)
        measures["synthetic_transfer"] = synthetic.synthetic_transfer(
            a_ii, a_fi, _val_means(scans["init"].scores, units), _val_means(scans["after"].scores, units))
    audited = "after" if "after" in images else "init"     # the state the images are shown for
    natural = topk_embedding.embed(np.asarray(scans[audited].topk_ids)[units, :spec.k_clip])
    measures["ns_agreement"] = synthetic.natural_synthetic_agreement(natural, e[audited])
    if audited == "after" and inp.targets.get(layer):       # the clean model's, beside it (SPEC §8.2's cross-check)
        natural_init = topk_embedding.embed(np.asarray(scans["init"].topk_ids)[units, :spec.k_clip])
        measures["ns_agreement_init"] = synthetic.natural_synthetic_agreement(natural_init, e["init"])
    return measures


def _fv_target(spec: VisualizeSpec, ctx, inp: _Inputs, models: dict, layer: str, units: list[int],
               images: dict[str, np.ndarray], topk_embedding, measures: dict, extra: dict[int, dict]) -> dict:
    """SPEC §8.1's measures of the attacked units that had a target, from this job's renders
    (seeds the attack never saw; :func:`~fvaudit.engine.measure.fv_manipulation.measure_rendered`):
    FV→target SSIM / MSE / embedder cosine after and before, FV after vs the original FV, the
    unit's AUROC for its top class before and after, natural–synthetic agreement (over the whole
    layer, as the synthetic step measures it) before and after, and the cross-check verdict.
    Per unit into ``extra``; returns the aggregates."""
    from fvaudit.engine.attack.slingshot import target_pixels
    from fvaudit.engine.measure.fv_manipulation import measure_rendered, target_uint8
    from fvaudit.engine.measure.synthetic import embed_images
    from fvaudit.jobs.common import layer_scan

    ctx.reporter.stage(f"measure {layer} against the targets")
    pos = {u: c for c, u in enumerate(units)}
    aimed = [u for u in sorted(inp.targets[layer]) if u in pos and u not in inp.dead.get(layer, set())]
    if not aimed:
        return {}
    cols = [pos[u] for u in aimed]
    shape = models["init"].input_shape
    tgt = target_uint8(np.stack([target_pixels(inp.targets[layer][u], shape) for u in aimed]))
    kw: dict = {}
    if topk_embedding is not None:
        kw["embed"] = lambda im: embed_images(topk_embedding.embedder, im)
    if "ns_agreement" in measures and "ns_agreement_init" in measures:
        kw["agreement"] = (np.asarray(measures["ns_agreement_init"])[cols], np.asarray(measures["ns_agreement"])[cols])
    if inp.val is not None and "init" in inp.stored and "after" in inp.stored:
        s_b, s_a = (layer_scan(ctx.store, inp.stored[k], layer) for k in ("init", "after"))
        labels = np.asarray(inp.val.labels)
        kw.update(val_scores=(np.asarray(s_b.scores)[:, aimed], np.asarray(s_a.scores)[:, aimed]), val_labels=labels,
                  topk_labels=labels[np.asarray(s_b.topk_ids)[aimed]])
    # the job's images are unit-major [J, n, ...]; the measures take seed-major [n, U, ...]
    m = measure_rendered(layer, aimed, list(range(spec.n_synth)), images["init"][cols].swapaxes(0, 1),
                         images["after"][cols].swapaxes(0, 1), tgt, **kw)
    for row in m.per_unit():
        u = row.pop("unit")
        verdict = row.pop("cross_check_after")
        extra[u] = {"fv_target": clean_json({**row, "moved_by": m.moved_by, "cross_check": verdict})}
    agg = m.aggregates()
    if "cross_check_after" in agg:
        agg["cross_check"] = agg.pop("cross_check_after")
    ctx.log(f"{layer}: FV of {int(np.sum(m.moved))}/{len(aimed)} units closer to their target than to their "
            f"original FV ({m.moved_by}); median FV→target SSIM {agg['ssim_target_after']} (before "
            f"{agg['ssim_target_before']})")
    return clean_json(agg)


def _store(ctx, inp: _Inputs, image_rows: list[dict], unit_measures: dict[str, dict[int, dict]],
           unit_extra: dict[str, dict[int, dict]] | None = None) -> None:
    with ctx.session() as db:
        db.execute(SyntheticImage.__table__.delete().where(SyntheticImage.job_id == ctx.job_id))  # a requeued job
        if image_rows:
            db.execute(SyntheticImage.__table__.insert(), image_rows)
        if ctx.run_id is not None and inp.after_state is not None:
            rows = [{"run_id": ctx.run_id, "layer": layer, "unit": u, "attacked": u in inp.attacked.get(layer, set()),
                     "dead": False, "topk": {}, "nearest": {}, "clip_self": {}, "extra": {}, **vals}
                    for layer, per_unit in unit_measures.items() for u, vals in per_unit.items()]
            upsert(db, UnitResult, rows, ("run_id", "layer", "unit"), update=MEASURES)
            for layer, per_unit in (unit_extra or {}).items():
                for u, add in per_unit.items():
                    row = db.scalar(select(UnitResult).where(UnitResult.run_id == ctx.run_id, UnitResult.layer == layer,
                                                             UnitResult.unit == u))
                    if row is not None:
                        row.extra = clean_json({**(row.extra or {}), **add})
