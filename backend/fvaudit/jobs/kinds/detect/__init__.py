"""Job kind ``detect``: "check this model" (SPEC §6), optionally against a reference.

The worker loads the suspect, the reference (if any) and the population of clean models,
and runs :func:`fvaudit.engine.detection.run.detect`: one scan of the image set per model,
the top-k embedded once per image (the embedding cache is shared with every other job),
evidence per layer, calibration against the population, verdicts per layer and model.

Stored: the verdicts (model and layers, with the evidence that drove them) in the job's
``result``; every unit's suspicion, measures and top-k ids as one JSON artifact
(``result.units_sha256``), so that listing jobs never carries thousands of units.
``GET /detections/{id}`` serves both (this kind's router, ``routes.py``).

Any model can be the suspect, the reference or a population member, or an attack job's
weights on one (``weights_from``): an auditor can check the result of an attack the tool
itself ran. Every model must share the suspect's architecture (same registry model, not
pruned differently): the measures compare unit j with unit j.
"""
from __future__ import annotations

import json

from pydantic import ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from fvaudit.db.tables import ImageSet, Model, User, clean_json
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, Embedder, Name, Strict, UniqueLayers, WeightsRef
from fvaudit.jobs.validate import (FieldError, check_classes_match, check_embedder, check_layer, find_layer,
                                   get_image_set, get_job, get_model, refuse_unused)

MAX_POPULATION = 16


class ModelRef(Strict):
    """A model taking part in a detection: a registered model, or an attack's weights on it."""

    model_id: DbId
    weights_from: WeightsRef | None = Field(None, description="an attack job's weights on this model instead of "
                                                              "the model's own")
    recipe: str | None = Field(None, min_length=1, max_length=80,
                               description="population: how this clean model was made (e.g. 'distill adam lr 1e-3', "
                                           "'cross-entropy sgd'); the verdict page lists the family's recipes. An "
                                           "attack job's weights default to its own recipe")


class DetectThresholds(Strict):
    """SPEC §6 verdict thresholds (conventional levels, not fitted to any benchmark variant)."""

    unit: float = Field(0.95, gt=0, lt=1, description="a unit counts as flagged above this suspicion")
    suspicious_p: float = Field(0.05, gt=0, lt=1, description="'suspicious' below this p-value")
    manipulated_p: float = Field(0.001, gt=0, lt=1, description="'manipulated' below this p-value")

    @model_validator(mode="after")
    def _order(self):
        if self.manipulated_p > self.suspicious_p:
            raise ValueError("manipulated_p must not exceed suspicious_p")
        return self


class DetectSynthetic(Strict):
    """Synthetic change (SPEC §4, §6; reference regime): every unit of each layer rendered with the
    same seeds under every model and embedded. Costly: one render per model and layer."""

    seeds: int = Field(2, ge=2, le=8, description="seeds per unit (≥ 2: their spread is the noise floor)")
    steps: int = Field(64, ge=1, le=4096, description="optimisation steps per render")


class DetectSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"suspect": {"model_id": 2}, "reference": {"model_id": 1},
         "population": [{"model_id": 3}, {"model_id": 4}], "image_set_id": 2, "layers": ["relu3"]}]})
    name: Name | None = None
    suspect: ModelRef = Field(description="the model to check")
    reference: ModelRef | None = Field(None, description="the model the suspect claims to derive from; without "
                                                         "one the suspect is judged against the population alone")
    population: list[ModelRef] = Field(
        min_length=1, max_length=MAX_POPULATION,
        description="clean models to calibrate against: with a reference, benign fine-tunes of it (α = 0, other "
                    "seeds); without one, ≥ 2 clean models of the same family (other seeds, other checkpoints)")
    image_set_id: DbId = Field(description="the labelled images whose top-k are compared (e.g. the validation set)")
    layers: UniqueLayers = Field(min_length=1, max_length=16)
    k: int = Field(10, gt=0, le=100, description="top-k size")
    k_clip: int = Field(5, gt=0, le=100, description="top-k images embedded for CLIP-δ (≤ k)")
    embedder: Embedder = "auto"
    batch_size: int = Field(256, gt=0, le=8192)
    thresholds: DetectThresholds = DetectThresholds()
    synthetic: DetectSynthetic | None = Field(None, description="also measure synthetic change (needs a reference)")

    def refs(self) -> list[tuple[str, tuple, ModelRef]]:
        """(role name, spec location, ref) of every model taking part, suspect first."""
        out = [("suspect", ("suspect",), self.suspect)]
        if self.reference is not None:
            out.append(("reference", ("reference",), self.reference))
        out += [(f"population {i + 1}", ("population", i), r) for i, r in enumerate(self.population)]
        return out


def _arch(m: Model) -> tuple:
    return (m.registry_name, json.dumps(m.prune or {}, sort_keys=True) if m.prune else None)


def check_detect(db: Session, user: User, spec: DetectSpec) -> DetectSpec:
    L = ("spec",)
    if spec.k_clip > spec.k:
        raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than k = {spec.k}")
    if spec.synthetic is not None and spec.reference is None:
        raise FieldError(L + ("synthetic",), "synthetic change compares renders with the reference's: give a reference")
    if spec.synthetic is not None and spec.embedder == "none":
        raise FieldError(L + ("synthetic",), "synthetic change embeds the renders: choose an embedder, not 'none'")
    # the rule of every spec: a field this detection does not use is refused when set
    no_ref = "without a reference no CLIP-δ is measured (the top-k are compared with the reference's)"
    refuse_unused(spec, {"k_clip": (spec.reference is not None, no_ref),
                         "embedder": (spec.reference is not None or spec.synthetic is not None, no_ref)}, L)
    if spec.reference is None and len(spec.population) < 2:
        raise FieldError(L + ("population",), "without a reference, give at least 2 clean models of the family "
                                              "(each is judged against the others to calibrate)")
    models: dict[tuple, Model] = {}
    for role, loc, ref in spec.refs():
        m = get_model(db, ref.model_id, L + loc + ("model_id",))
        if ref.weights_from is not None:
            j = get_job(db, user, ref.weights_from.job_id, L + loc + ("weights_from", "job_id"), ("attack",))
            if j.spec.get("model_id") != ref.model_id:
                raise FieldError(L + loc + ("weights_from", "job_id"),
                                 f"attack job {j.id} attacked model {j.spec.get('model_id')}, not {ref.model_id}")
        models[loc] = m
    suspect = models[("suspect",)]
    layers = [check_layer(suspect, name, L + ("layers", i))["name"] for i, name in enumerate(spec.layers)]
    if len(set(layers)) != len(layers):
        raise FieldError(L + ("layers",), "a layer is listed twice")
    for role, loc, ref in spec.refs()[1:]:
        m = models[loc]
        if _arch(m) != _arch(suspect) or any((find_layer(m, l) or {}).get("units") != find_layer(suspect, l)["units"]
                                             for l in layers):
            raise FieldError(L + loc + ("model_id",),
                             f"model {m.id} ({m.registry_name}{', pruned' if m.prune else ''}) does not share the "
                             f"suspect's architecture ({suspect.registry_name}{', pruned' if suspect.prune else ''}): "
                             "units cannot be compared one to one")
    seen = [(r.model_id, r.weights_from.job_id if r.weights_from else None,
             r.weights_from.state if r.weights_from else None) for _, _, r in spec.refs()]
    for i, key in enumerate(seen[1:], start=1):
        if key == seen[0]:
            role, loc, _ = spec.refs()[i]
            raise FieldError(L + loc, f"the {role} is the suspect itself: it cannot calibrate or be a reference")
    images = get_image_set(db, spec.image_set_id, L + ("image_set_id",))
    check_classes_match(suspect, images, L + ("image_set_id",))
    if spec.k > images.size:
        raise FieldError(L + ("k",), f"k = {spec.k} is larger than the image set ({images.size} images)")
    return spec.model_copy(update={"layers": layers, "embedder": check_embedder(spec.embedder, L + ("embedder",))})


@register_kind
class DetectKind(JobKind):
    name = "detect"
    title = "detect"
    description = ("check a model for manipulated explanations (SPEC §6): per-unit suspicion and verdicts per "
                   "layer and model, with or without a reference")
    spec = DetectSpec
    routes = "fvaudit.jobs.kinds.detect.routes"

    def check(self, db, user, spec):
        return check_detect(db, user, spec)

    def depends_on(self, spec: DetectSpec) -> list[int]:
        return [r.weights_from.job_id for _, _, r in spec.refs() if r.weights_from is not None]

    def run(self, spec: DetectSpec, ctx) -> dict:
        return run_detect(spec, ctx)


def _model_name(m: Model, ref: ModelRef) -> str:
    if ref.weights_from is None:
        return m.name
    return f"{m.name} · attack {ref.weights_from.job_id} ({ref.weights_from.state})"


def _recipe_of(db: Session, ref: ModelRef) -> str | None:
    """An attack job's weights name their own recipe (kind, loss, optimizer, lr, steps): what
    an auditor reads as "how this clean model was made"; a plain model has none unless given."""
    if ref.weights_from is None:
        return None
    from fvaudit.db.tables import Job

    j = db.get(Job, ref.weights_from.job_id)
    a = (j.spec or {}).get("attack", {}) if j is not None else {}
    if not a:
        return None
    loss = "cross-entropy" if a.get("maintain") == "labels" else "distill"
    kind = "fine-tune" if a.get("kind") == "finetune" else a.get("kind", "attack").replace("_", "-")
    lr = a.get("lr")
    lr_s = f" lr {lr:g}" if isinstance(lr, (int, float)) else ""
    return f"{kind} {loss} {a.get('optimizer', 'adam')}{lr_s} {a.get('lr_schedule', 'cosine')} {a.get('steps', '?')} steps"


def run_detect(spec: DetectSpec, ctx) -> dict:
    from fvaudit.engine.detection import evidence
    from fvaudit.engine.detection.run import Subject, detect
    from fvaudit.jobs.common import load_db_model, open_db_image_set, resolve_weights
    from fvaudit.engine.measure.embedders import make_topk_embedder

    subjects, names, recipes = [], {}, {}
    with ctx.session() as db:
        rows = []
        for role, _, ref in spec.refs():
            recipes[role] = ref.recipe or _recipe_of(db, ref)
            m = db.get(Model, ref.model_id)
            if m is None:
                raise RuntimeError(f"model {ref.model_id} ({role}) no longer exists")
            ckpt, label = resolve_weights(db, ctx.store, m, ref.weights_from, None)
            db.expunge(m)
            rows.append((role, ref, m, ckpt, label))
        set_row = db.get(ImageSet, spec.image_set_id)
        if set_row is None:
            raise RuntimeError(f"image set {spec.image_set_id} no longer exists")
        images = open_db_image_set(db, set_row)
    for i, (role, ref, m, ckpt, label) in enumerate(rows):
        ctx.check_cancel()
        ctx.reporter.stage(f"load {role}", total=len(rows))
        subjects.append(Subject(role, load_db_model(m, ckpt, ctx.device), recipe=recipes.get(role)))
        names[role] = {"model_id": m.id, "name": _model_name(m, ref), "weights": label,
                       "weights_from": ref.weights_from.model_dump() if ref.weights_from else None,
                       "recipe": recipes.get(role)}
    topk_embedding = (make_topk_embedder(spec.embedder, images, ctx.cache_dir, ctx.device, ctx.reporter)
                      if spec.reference is not None else None)
    embed, embedder, emb_id, warning = ((topk_embedding.embed, topk_embedding.embedder, topk_embedding.id,
                                         topk_embedding.warning) if topk_embedding else (None, None, None, None))
    if warning:
        ctx.log(f"note: {warning}")
    suspect = subjects[0]
    reference = subjects[1] if spec.reference is not None else None
    population = subjects[2:] if spec.reference is not None else subjects[1:]
    th = evidence.VerdictThresholds(unit=spec.thresholds.unit, suspicious_p=spec.thresholds.suspicious_p,
                             manipulated_p=spec.thresholds.manipulated_p)
    synthetic = embed_images = None
    if spec.synthetic is not None:
        from fvaudit.engine.detection.run import SyntheticOptions

        if embedder is None:
            raise RuntimeError("synthetic change needs an image embedder; the spec says embedder 'none'")
        synthetic = SyntheticOptions(seeds=tuple(range(spec.synthetic.seeds)), steps=spec.synthetic.steps)
        embed_images = embedder.embed
    rep = detect(suspect, images, spec.layers, reference=reference, population=population, k=spec.k,
                 k_clip=spec.k_clip, embed_topk=embed, thresholds=th, batch_size=spec.batch_size,
                 synthetic=synthetic, embed_images=embed_images,
                 device=ctx.device, reporter=ctx.reporter, work_dir=ctx.work_dir / "detect")
    ctx.reporter.stage("store results")
    path = ctx.work_dir / "units.json"
    units = rep.units()
    labels = images.labels
    for rows_ in units.values():
        for u in rows_:
            for side in ("topk_suspect", "topk_reference"):
                if u[side] is not None:
                    u[f"{side}_labels"] = [int(labels[i]) for i in u[side]]
    path.write_text(json.dumps(clean_json(units)))
    with ctx.session() as db:
        art = ctx.store.put_file(db, path, "detection", ".json")
        sha = art.sha256
    summary = rep.summary()
    by_layer = ", ".join(f"{l} {v['verdict']}" + (f" ({v['n_flagged']}/{v['n_units']} units flagged)"
                                                    if v["n_flagged"] is not None else "")
                         for l, v in summary["layers"].items())
    p = summary["p_value"]
    ctx.log(f"verdict: {summary['verdict']}" + (f" (p = {p:.3g})" if p is not None else "") + f"; {by_layer}")
    for w in summary["warnings"]:
        ctx.log(f"warning: {w}")
    return clean_json({**summary, "models": names, "embedder": emb_id, "embedder_warning": warning,
                       "image_set_id": spec.image_set_id, "units_sha256": sha,
                       "classes": list(images.class_names)})
