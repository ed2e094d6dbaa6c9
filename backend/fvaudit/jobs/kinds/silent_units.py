"""Job kind ``silent_units``: a model manipulated by surgery so chosen units' feature
visualizations follow a silent path toward a target image (SPEC §8.3; Geirhos et al.,
ICML 2024, orthogonal filters; the engine is :mod:`fvaudit.engine.models.silent`).

The run builds the manipulated model (the silent path calibrated to exactly 0 on every
image of the natural set, the training set), stores its safetensors checkpoint (its
architecture record in the metadata, so any later job loads it through
:func:`fvaudit.jobs.common.load_db_model` without pickles) and registers it as a model
row with its lineage: ``parent_model_id`` the original, ``source`` ``silent_units``, the
manipulated model's own layer list (``module_type`` ``SilentConv`` on the manipulated conv).
The construction record and the measured report (natural behaviour on the validation set,
every unit's natural top-k, the renders' similarity to the target) are the job's result.

The row's ``prune`` stays empty on purpose: it is the record of a pruning (a masked model
gets its masks back from it, and detection treats it as another architecture), while a
silent-units model claims to be its parent, which is exactly what detection must judge.
"""
from __future__ import annotations

from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session

from fvaudit.db.tables import ImageSet, Model, User, clean_json
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import DbId, ImageIdx, LayerName, Name, Strict, UnitIdx
from fvaudit.jobs.validate import FieldError, check_classes_match, check_layer, get_image_set, get_model

MAX_UNITS = 64


class TargetImage(Strict):
    """One image of a registered image set (the target the silent path points to)."""

    image_set_id: DbId
    image_id: ImageIdx


class SilentUnitsSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "layer": "relu3", "units": [0, 5], "target": {"image_set_id": 2, "image_id": 0},
         "natural_set_id": 1, "val_set_id": 2}]})
    name: Name | None = None
    model_id: DbId = Field(description="the model to manipulate (the parent of the result)")
    layer: LayerName = Field(description="a conv layer; its units are the channels of the conv producing it")
    units: list[UnitIdx] = Field(min_length=1, max_length=MAX_UNITS, description="the units given a silent path")
    target: TargetImage | list[TargetImage] = Field(
        description="the target image: one for all units, or a list with one per unit")
    natural_set_id: DbId = Field(description="the natural images the silent path stays exactly 0 on (the training "
                                             "set; every image of it is streamed once)")
    val_set_id: DbId | None = Field(None, description="the set the report measures natural behaviour on "
                                                      "(default: the natural set)")
    lam: float = Field(3.0, gt=0.0, le=1000.0, description="λ: weight of the target direction in the silent filter")
    s: float = Field(100.0, gt=0.0, le=1e6, description="scale of the silent filter")
    fv_steps: int = Field(128, ge=1, le=4096, description="render steps of the report's feature visualizations")
    fv_seeds: int = Field(2, ge=1, le=16, description="fresh render seeds per unit in the report")


def check_silent_spec(db: Session, user: User, spec: SilentUnitsSpec) -> SilentUnitsSpec:
    L = ("spec",)
    model = get_model(db, spec.model_id, L + ("model_id",))
    info = check_layer(model, spec.layer, L + ("layer",))
    if info["kind"] != "conv":
        raise FieldError(L + ("layer",), f"layer {info['name']} is not a conv layer; silent units are channels of "
                                         "a conv")
    n = int(info["units"])
    for i, u in enumerate(spec.units):
        if u >= n:
            raise FieldError(L + ("units", i), f"unit {u} out of range for layer {info['name']} of {model.name}: "
                                               f"it has {n} units (0..{n - 1})")
    if len(set(spec.units)) != len(spec.units):
        raise FieldError(L + ("units",), "unit indices must be unique")
    targets = spec.target if isinstance(spec.target, list) else [spec.target]
    if isinstance(spec.target, list) and len(targets) not in (1, len(spec.units)):
        raise FieldError(L + ("target",), f"give one target for all units or one per unit ({len(spec.units)}), "
                                          f"got {len(targets)}")
    for i, t in enumerate(targets):
        loc = L + ("target",) + ((i,) if isinstance(spec.target, list) else ())
        s = get_image_set(db, t.image_set_id, loc + ("image_set_id",))
        if t.image_id >= s.size:
            raise FieldError(loc + ("image_id",), f"image {t.image_id} is not in image set {s.name}: it has "
                                                  f"{s.size} images (0..{s.size - 1})")
    get_image_set(db, spec.natural_set_id, L + ("natural_set_id",))
    if spec.val_set_id is not None:
        val = get_image_set(db, spec.val_set_id, L + ("val_set_id",))
        check_classes_match(model, val, L + ("val_set_id",))
    else:
        check_classes_match(model, db.get(ImageSet, spec.natural_set_id), L + ("natural_set_id",))
    return spec.model_copy(update={"layer": info["name"]})


@register_kind
class SilentUnitsKind(JobKind):
    name = "silent_units"
    title = "silent units (orthogonal filters)"
    description = ("give units a silent path toward a target image, exactly 0 on every natural image: the feature "
                   "visualization follows it, natural behaviour is unchanged; the result is a new model with its "
                   "lineage (SPEC §8.3)")
    spec = SilentUnitsSpec

    def check(self, db, user, spec: SilentUnitsSpec) -> SilentUnitsSpec:
        return check_silent_spec(db, user, spec)

    def run(self, spec: SilentUnitsSpec, ctx) -> dict:
        return run_silent_units(spec, ctx)


def run_silent_units(spec: SilentUnitsSpec, ctx) -> dict:
    import torch

    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.engine.models.silent import silent_report, silent_units, target_pixels
    from fvaudit.jobs.common import load_db_model, open_db_image_set, resolve_weights

    targets = spec.target if isinstance(spec.target, list) else [spec.target]
    with ctx.session() as db:
        parent = db.get(Model, spec.model_id)
        if parent is None:
            raise RuntimeError(f"model {spec.model_id} no longer exists")
        ckpt, _ = resolve_weights(db, ctx.store, parent, None, None)
        natural = open_db_image_set(db, db.get(ImageSet, spec.natural_set_id))
        val = open_db_image_set(db, db.get(ImageSet, spec.val_set_id)) if spec.val_set_id else natural
        target_sets = {t.image_set_id: open_db_image_set(db, db.get(ImageSet, t.image_set_id)) for t in targets}
        db.expunge(parent)
    ctx.reporter.stage("load model")
    model = load_db_model(parent, ckpt, ctx.device)
    pixels = torch.stack([target_pixels(model, target_sets[t.image_set_id].load_array(t.image_id)) for t in targets])
    ctx.reporter.stage(f"silent units: calibrate on {len(natural)} natural images")
    manipulated, record = silent_units(model, spec.layer, list(spec.units), pixels, (natural, natural.ids),
                                       lam=spec.lam, s=spec.s, device=ctx.device)
    ctx.reporter.stage("store the manipulated model")
    out = save_checkpoint(manipulated.module, ctx.work_dir / "silent.safetensors",
                          {"registry_name": parent.registry_name, "manipulation": "silent_units"})
    record = {**record, "parent_model_id": spec.model_id, "natural_set_id": spec.natural_set_id,
              "targets": [t.model_dump() for t in targets]}
    with ctx.session() as db:
        art = ctx.store.put_file(db, out, "checkpoint", ".safetensors")
        parent_row = db.get(Model, spec.model_id)
        name = spec.name or f"{parent_row.name if parent_row else parent.name} · silent {spec.layer} ×{len(spec.units)}"
        row = Model(name=name[:200], registry_name=parent.registry_name, source="silent_units",
                    owner_id=ctx.owner_id, parent_model_id=spec.model_id, class_names=list(parent.class_names or []),
                    input_shape=list(parent.input_shape or []), pretrained=False,
                    layers=clean_json([layer.as_dict() for layer in manipulated.layers]),
                    weights=(f"silent units of {spec.layer} {list(spec.units)[:8]}{'…' if len(spec.units) > 8 else ''}"
                             f" from model {spec.model_id}, job {ctx.job_id} (sha256 {art.sha256[:12]})")[:500],
                    checkpoint_id=art.id)
        db.add(row)
        db.flush()
        model_id = row.id
    ctx.log(f"silent units {spec.layer} {list(spec.units)}: model {model_id}")
    ctx.reporter.stage("measure: natural behaviour, top-k, renders")
    report = silent_report(model, manipulated, val, spec.layer, list(spec.units), pixels,
                           seeds=[1000 + i for i in range(spec.fv_seeds)], steps=spec.fv_steps, device=ctx.device)
    ctx.log(f"max |Δlogit| {report['natural']['max_abs_dlogit']:g} on {report['natural']['images']} images; "
            f"top-k identical for {report['topk']['units_identical']}/{report['topk']['units']} units")
    return clean_json({"model_id": model_id, "sha": art.sha256, "record": record, "report": report})
