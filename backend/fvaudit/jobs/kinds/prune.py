"""Job kind ``prune``: prune a model, fine-tune it, register the result as a model (SPEC §5).

Methods (thesis Chapter 4): ``norm`` (one global L1 threshold over conv and linear
weights, exactly ``round(rate·n)`` zeroed), ``oto_filter`` / ``oto_weight`` (Only Train
Once to a target group sparsity, filter- or weight-focused) and ``vulnerability`` (remove
the channels of a layer with the highest CLIP-δ in a push-down run of that layer, or
given channels). The pruned model is fine-tuned on the labels with the pruned weights
held at zero after every optimizer step; the schedule is the thesis' (Adam, lr 1e-5 for
10 epochs then 1e-6 for 10) scaled to ``steps`` in two equal phases, the second at
``lr · lr_drop``, on a training subset, and recorded. Accuracy on the full validation
set is measured before pruning, after pruning and after fine-tuning, each with its
number of images.

The result is a model row like any other (a safetensors checkpoint in the store; scan,
attack and audit jobs load it through :func:`fvaudit.jobs.common.load_db_model`, which
re-attaches the masks of a pruned model so its zeros stay zero through an attack), with
its lineage: ``parent_model_id``, ``prune_job_id`` and the ``prune`` record. A sweep
creates that row when it is launched (so its audits can name it) and the job fills it;
a prune job launched alone creates it.
"""
from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from fvaudit.db.tables import ImageSet, Model, Run, UnitResult, User, clean_json
from fvaudit.db.session import inserted
from fvaudit.engine.defence.defaults import METHOD_LABELS, METHODS, PRUNE_DEFAULTS, finetune_phases, n_channels
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, LayerName, Name, Strict, UnitIdx
from fvaudit.jobs.validate import FieldError, check_classes_match, check_layer, get_image_set, get_model

PruneMethod = Literal["norm", "oto_filter", "oto_weight", "vulnerability"]
assert get_args(PruneMethod) == METHODS


class FinetuneParams(Strict):
    """The fine-tune after pruning: the thesis' two-phase schedule, scaled (and recorded)."""

    steps: int = Field(PRUNE_DEFAULTS["finetune_steps"], ge=0, le=10_000_000,
                       description="optimizer steps in all (0 = no fine-tune); two equal phases like the "
                                   "thesis' 10 + 10 epochs")
    lr: float = Field(PRUNE_DEFAULTS["lr"], gt=0.0, le=10.0, description="Adam learning rate of the first phase")
    lr_drop: float = Field(PRUNE_DEFAULTS["lr_drop"], gt=0.0, le=1.0,
                           description="the second phase's lr is lr · lr_drop (thesis: 0.1)")
    batch_size: int = Field(PRUNE_DEFAULTS["batch_size"], gt=0, le=8192)
    train_limit: int | None = Field(PRUNE_DEFAULTS["train_limit"], ge=1, le=100_000_000,
                                    description="fine-tune on a seeded class-stratified sample of N training "
                                                "images (null = all)")
    seed: int = Field(PRUNE_DEFAULTS["seed"], ge=0, le=2**31 - 1)

    def phases(self) -> list[tuple[int, float]]:
        return finetune_phases(self.steps, self.lr, self.lr_drop)


class PruneParams(Strict):
    """What to prune; ``rate`` means, by method: norm, the fraction of conv/linear weights
    zeroed; oto_*, the target group sparsity; vulnerability, the fraction of the layer's
    channels removed (the top ones by CLIP-δ of ``delta_run_id``)."""

    method: PruneMethod = Field("norm", json_schema_extra={"labels": METHOD_LABELS})
    layer: LayerName | None = Field(None, description="vulnerability: the layer whose channels are removed")
    channels: list[UnitIdx] | None = Field(None, min_length=1, max_length=65536,
                                           description="vulnerability: the channels to remove (instead of rate)")
    delta_run_id: DbId | None = Field(None, description="vulnerability: the push-down run of the layer whose "
                                                        "per-unit CLIP-δ ranks the channels")
    rate: float | None = Field(None, gt=0.0, lt=1.0, validate_default=True,
                               description="a fraction strictly between 0 and 1 (see above)")
    oto_steps: int = Field(PRUNE_DEFAULTS["oto_steps"], gt=0, le=10_000_000, description="oto_*: HESSO training steps that reach the "
                                                                 "target group sparsity (before the fine-tune)")
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("method") != "vulnerability":
            raise ValueError("channels are only for vulnerability pruning")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("channel indices must be unique")
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v, info: ValidationInfo):
        method = info.data.get("method")
        if v is None and method is not None and not (method == "vulnerability" and info.data.get("channels")):
            raise ValueError(f"{method} pruning needs a rate in (0, 1)"
                             + (" (or channels)" if method == "vulnerability" else ""))
        return v

    def label(self) -> str:
        what = f"{len(self.channels)} channels" if self.channels is not None else f"{100 * (self.rate or 0):g}%"
        return f"{METHOD_LABELS[self.method]} {what}"


class PruneSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "train_set_id": 1, "val_set_id": 2,
         "prune": {"method": "norm", "rate": 0.5, "finetune": {"steps": 200, "train_limit": 6000}}}]})
    name: Name | None = None
    model_id: DbId = Field(description="the model to prune (the parent of the result)")
    train_set_id: DbId = Field(description="fine-tuning (and OTO) images")
    val_set_id: DbId = Field(description="accuracy before and after, on all of it")
    prune: PruneParams


def check_prune(db: Session, user: User, model: Model, p: PruneParams, loc: tuple,
                delta_pending: bool = False) -> PruneParams:
    """The prune parameters against the model and the DB (loc: where ``p`` sits in the body).

    ``delta_pending``: the push-down run that ranks a vulnerability pruning's channels is
    made by the same sweep (its baseline point), so it is not required here."""
    if p.method != "vulnerability":
        return p
    if p.layer is None:
        raise FieldError(loc + ("layer",), "vulnerability pruning needs the layer whose channels are removed")
    info = check_layer(model, p.layer, loc + ("layer",))
    if info["kind"] != "conv":
        raise FieldError(loc + ("layer",), f"layer {info['name']} is not a conv layer; vulnerability pruning "
                                           f"removes channels")
    units = int(info["units"])
    update: dict = {"layer": info["name"]}
    if p.channels is not None:
        for i, c in enumerate(p.channels):
            if c >= units:
                raise FieldError(loc + ("channels", i), f"channel {c} out of range for layer {info['name']} of "
                                                        f"{model.name}: it has {units} channels (0..{units - 1})")
        if len(p.channels) >= units:
            raise FieldError(loc + ("channels",), f"removing all {units} channels of {info['name']} leaves nothing")
    else:
        n = n_channels(p.rate, units)
        if not 1 <= n < units:
            raise FieldError(loc + ("rate",), f"rate {p.rate} of {units} channels removes {n}: pick a rate that "
                                              f"removes between 1 and {units - 1}")
        if p.delta_run_id is None and not delta_pending:
            raise FieldError(loc + ("delta_run_id",), f"vulnerability pruning of {info['name']} needs a push-down "
                                                      f"run of that layer on model {model.id}: give delta_run_id "
                                                      "(or channels)")
    if p.delta_run_id is not None and p.channels is None:
        check_delta_run(db, user, model, info["name"], p.delta_run_id, loc + ("delta_run_id",), finished=True)
    return p.model_copy(update=update)


def check_delta_run(db: Session, user: User, model: Model, layer: str, run_id: int, loc: tuple,
                    finished: bool) -> Run:
    run = db.get(Run, run_id)
    if run is None or (run.owner_id != user.id and not user.is_admin):
        raise FieldError(loc, f"unknown run id {run_id}")
    if run.attack_kind != "push_down" or layer not in (run.layers or []):
        raise FieldError(loc, f"run {run_id} is not a push-down of {layer} (it is a {run.attack_kind} of "
                              f"{', '.join(run.layers or []) or 'no layer'})")
    if run.model_id != model.id:
        raise FieldError(loc, f"run {run_id} attacked model {run.model_id}, not model {model.id}")
    if finished:
        has = db.scalar(select(UnitResult.id).where(UnitResult.run_id == run_id, UnitResult.layer == layer,
                                                    UnitResult.clip_delta.is_not(None)).limit(1))
        if has is None:
            raise FieldError(loc, f"run {run_id} has no CLIP-δ of {layer} yet (status {run.status}); its metrics "
                                  "must be measured first")
    return run


def check_prune_spec(db: Session, user: User, spec: PruneSpec) -> PruneSpec:
    L = ("spec",)
    model = get_model(db, spec.model_id, L + ("model_id",))      # refuses a pruned model not made yet
    train = get_image_set(db, spec.train_set_id, L + ("train_set_id",))
    val = get_image_set(db, spec.val_set_id, L + ("val_set_id",))
    check_classes_match(model, train, L + ("train_set_id",))
    check_classes_match(model, val, L + ("val_set_id",))
    lim = spec.prune.finetune.train_limit
    if lim is not None and lim > train.size:
        raise FieldError(L + ("prune", "finetune", "train_limit"), f"train_limit = {lim} is larger than the "
                                                                  f"training set {train.name} ({train.size} images)")
    return spec.model_copy(update={"prune": check_prune(db, user, model, spec.prune, L + ("prune",))})


def pruned_name(parent: Model, p: PruneParams) -> str:
    return f"{parent.name} · {p.label()}"


def new_pruned_model(db: Session, user_id: int | None, parent: Model, p: PruneParams, name: str | None = None) -> Model:
    """The row of a pruned model before its prune job ran (no checkpoint yet; the job fills it)."""
    m = Model(name=name or pruned_name(parent, p), registry_name=parent.registry_name, source="pruned",
              weights="pending", pretrained=False, checkpoint_id=None, layers=list(parent.layers or []),
              class_names=list(parent.class_names or []), input_shape=list(parent.input_shape or []),
              owner_id=user_id, parent_model_id=parent.id, prune=None)
    return inserted(db, m)


@register_kind
class PruneKind(JobKind):
    name = "prune"
    title = "prune + fine-tune"
    description = ("norm, OTO (filter / weight) or vulnerability pruning, then a fine-tune holding the pruned "
                   "weights at zero; the result is a new model with its lineage (SPEC §5)")
    spec = PruneSpec

    def check(self, db, user, spec: PruneSpec) -> PruneSpec:
        return check_prune_spec(db, user, spec)

    def run(self, spec: PruneSpec, ctx) -> dict:
        return run_prune(spec, ctx)


def vulnerable_channels(db: Session, run_id: int, layer: str, n: int) -> list[int]:
    """The ``n`` units of ``layer`` with the highest CLIP-δ in run ``run_id`` (ties: lower index
    first; units without a CLIP-δ, e.g. dead ones, after every measured unit)."""
    rows = db.execute(select(UnitResult.unit, UnitResult.clip_delta).where(UnitResult.run_id == run_id,
                                                                           UnitResult.layer == layer)).all()
    if not any(d is not None for _, d in rows):
        raise RuntimeError(f"run {run_id} holds no CLIP-δ of {layer}: its metrics have not been measured")
    ranked = sorted(rows, key=lambda r: (r.clip_delta is None, -(r.clip_delta or 0.0), r.unit))
    return sorted(int(r.unit) for r in ranked[:n])


def run_prune(spec: PruneSpec, ctx) -> dict:
    from fvaudit.engine.defence.prune import FinetuneSettings, prune, summary
    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.jobs.common import load_db_model, open_db_image_set, resolve_weights

    p, ft = spec.prune, spec.prune.finetune
    with ctx.session() as db:
        parent = db.get(Model, spec.model_id)
        if parent is None:
            raise RuntimeError(f"model {spec.model_id} no longer exists")
        ckpt, _ = resolve_weights(db, ctx.store, parent, None, None)
        train = open_db_image_set(db, db.get(ImageSet, spec.train_set_id))
        val = open_db_image_set(db, db.get(ImageSet, spec.val_set_id))
        channels = list(p.channels) if p.channels is not None else None
        if p.method == "vulnerability" and channels is None:
            units = next(int(l["units"]) for l in parent.layers if l["name"] == p.layer)
            channels = vulnerable_channels(db, p.delta_run_id, p.layer, n_channels(p.rate, units))
        db.expunge(parent)
    ctx.reporter.stage("load model")
    model = load_db_model(parent, ckpt, ctx.device)
    settings = FinetuneSettings(steps=ft.steps, lr=ft.lr, lr_drop=ft.lr_drop, batch_size=ft.batch_size,
                                oto_steps=p.oto_steps, train_limit=ft.train_limit, seed=ft.seed)
    done = prune(model, p.method, p.rate, train, val, layer=p.layer, channels=channels, settings=settings,
                 device=ctx.device, reporter=ctx.reporter)
    ctx.reporter.stage("store the pruned model")
    out = save_checkpoint(done.model.module, ctx.work_dir / "pruned.safetensors",
                          {"registry_name": parent.registry_name, "prune_method": p.method})
    record = {**done.record, "rate": p.rate, "delta_run_id": p.delta_run_id, "val_set_id": spec.val_set_id,
              "parent_model_id": spec.model_id,
              "finetune": {**done.record["finetune"], "train_set_id": spec.train_set_id}}
    with ctx.session() as db:
        art = ctx.store.put_file(db, out, "checkpoint", ".safetensors")
        row = db.scalar(select(Model).where(Model.prune_job_id == ctx.job_id))
        parent_row = db.get(Model, spec.model_id)
        if row is None:
            row = Model(name=spec.name or pruned_name(parent_row, p), registry_name=parent.registry_name,
                        source="pruned", owner_id=ctx.owner_id, parent_model_id=spec.model_id,
                        prune_job_id=ctx.job_id, class_names=list(parent.class_names or []),
                        input_shape=list(parent.input_shape or []), pretrained=False, layers=[], weights="")
            db.add(row)
        row.checkpoint_id = art.id
        row.weights = f"pruned from model {spec.model_id}: {p.label()} (sha256 {art.sha256[:12]})"
        row.layers = clean_json([layer.as_dict() for layer in done.model.layers])
        row.prune = clean_json(record)
        db.flush()
        model_id = row.id
    ctx.log(f"{summary(record, p.label())}; model {model_id}")
    return {"model_id": model_id, "sha": art.sha256, **{k: record[k] for k in (
        "method", "rate", "weight_rate", "filter_rate", "parent_acc", "pruned_acc", "finetuned_acc", "acc_n_images")},
            "finetune": record["finetune"]}
