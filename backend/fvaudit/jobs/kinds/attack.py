"""Job kind ``attack``: push-down / push-up / fine-tune baseline (SPEC §2) on one or several layers.

Runs the engine's :func:`~fvaudit.engine.attack.run.run_attack` with a work directory per
job, so a job requeued after its worker died resumes from the last checkpoint (the
engine draws every step's batches from ``(seed, step)``: the resumed path equals the
uninterrupted one). The selected (the latest state within the accuracy budget on the
full validation set) and final weights become safetensors artifacts; accuracy (with the
number of images each figure was measured on), α trajectory and loss history go to the run.
"""
from __future__ import annotations

from dataclasses import asdict

from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session

from fvaudit.db.tables import ImageSet, Model, Run, User, clean_json
from fvaudit.db.session import inserted
from fvaudit.jobs.registry import JobKind, register_kind
from fvaudit.jobs.specs import AttackParams, DbId, Name, PathStr, Strict
from fvaudit.jobs.validate import (FieldError, check_attack, check_checkpoint_path, check_classes_match,
                                   get_image_set, get_job, get_model)


class AttackSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "train_set_id": 1, "val_set_id": 2,
         "attack": {"kind": "push_down", "layers": ["relu3"], "steps": 100}}]})
    name: Name | None = None
    model_id: DbId
    train_set_id: DbId
    val_set_id: DbId
    attack: AttackParams
    init_scan_job_id: DbId | None = Field(None, description="a scan job of θ_init on the training set (reused)")
    checkpoint_path: PathStr | None = None


def check_attack_spec(db: Session, user: User, spec, loc: tuple = ("spec",)):
    """Checks shared by ``attack`` and ``audit`` specs (model, sets, attack, checkpoint)."""
    model = get_model(db, spec.model_id, loc + ("model_id",))
    train = get_image_set(db, spec.train_set_id, loc + ("train_set_id",))
    val = get_image_set(db, spec.val_set_id, loc + ("val_set_id",))
    check_classes_match(model, train, loc + ("train_set_id",))
    check_classes_match(model, val, loc + ("val_set_id",))
    update: dict = {"attack": check_attack(db, model, train, spec.attack, loc + ("attack",))}
    if spec.checkpoint_path is not None:
        update["checkpoint_path"] = check_checkpoint_path(spec.checkpoint_path, loc + ("checkpoint_path",))
    return spec.model_copy(update=update), model, train, val


def run_name(db: Session, spec) -> str:
    if spec.name:
        return spec.name
    model = db.get(Model, spec.model_id)
    return f"{model.name if model else spec.model_id} {'+'.join(spec.attack.layers)} {spec.attack.kind}"


def new_attack_run(db: Session, user: User, spec, name: str, params: AttackParams | None = None) -> Run:
    """A run for an attack of ``spec`` (an attack or audit spec); ``params`` overrides its attack."""
    a = params or spec.attack
    run = Run(name=name, owner_id=user.id, model_id=spec.model_id, status="queued", attack_kind=a.kind,
              layers=list(a.layers), attack=clean_json(a.model_dump(mode="json")), train_set_id=spec.train_set_id,
              val_set_id=spec.val_set_id, k_clip=getattr(spec, "k_clip", 5), embedder=None)
    return inserted(db, run)


@register_kind
class AttackKind(JobKind):
    name = "attack"
    title = "attack"
    description = "push-down, push-up or the α = 0 fine-tune baseline on one or several layers (SPEC §2)"
    spec = AttackSpec

    def check(self, db, user, spec: AttackSpec) -> AttackSpec:
        L = ("spec",)
        spec, _, train, _ = check_attack_spec(db, user, spec, L)
        if spec.init_scan_job_id is not None:
            j = get_job(db, user, spec.init_scan_job_id, L + ("init_scan_job_id",), ("scan",))
            if j.spec.get("model_id") != spec.model_id or spec.train_set_id not in j.spec.get("image_set_ids", []):
                raise FieldError(L + ("init_scan_job_id",), f"scan job {j.id} did not scan model {spec.model_id} "
                                                            f"on image set {spec.train_set_id}")
            missing = [l for l in spec.attack.layers if l not in j.spec.get("layers", [])]
            if missing:
                raise FieldError(L + ("init_scan_job_id",), f"scan job {j.id} did not scan layer(s) "
                                                            f"{', '.join(missing)}")
            if j.spec.get("k", 0) < spec.attack.k:
                raise FieldError(L + ("init_scan_job_id",), f"scan job {j.id} kept top-{j.spec.get('k')}, "
                                                            f"fewer than k = {spec.attack.k}")
        return spec

    def depends_on(self, spec: AttackSpec) -> list[int]:
        return [spec.init_scan_job_id] if spec.init_scan_job_id else []

    def run_for(self, db, user, spec: AttackSpec) -> Run:
        return new_attack_run(db, user, spec, run_name(db, spec))

    def run(self, spec: AttackSpec, ctx) -> dict:
        return run_attack_job(spec, ctx)


def attack_config(params: AttackParams, layers: list[str], device: str):
    """The engine's config: the same field names, so no field is copied by hand."""
    from fvaudit.engine.attack.config import AttackConfig, Target

    units = list(params.units) if params.units is not None else None
    return AttackConfig(targets=[Target(l, units) for l in layers], device=device, **params.engine_fields())


def accuracy_of(res) -> dict:
    """What the run page shows of an attack's accuracy: every figure with its image count."""
    return {"init": res.acc_init, "final": res.acc_selected, "last": res.acc_final,
            "selected_step": res.selected_step, "steps": res.steps, "over_budget": res.final_over_budget,
            "delta": res.delta_selected, "delta_last": res.delta_final, "n_images": res.acc_n_images,
            "eval_n_images": res.eval_n_images, "budget_pp": res.acc_budget_pp,
            "full_evaluations": res.full_evaluations}


def run_attack_job(spec: AttackSpec, ctx) -> dict:
    from fvaudit.engine.attack.run import run_attack
    from fvaudit.jobs.common import layer_scan, load_db_model, load_scan, open_db_image_set, resolve_weights

    with ctx.session() as db:
        model_row = db.get(Model, spec.model_id)
        train_row = db.get(ImageSet, spec.train_set_id)
        val_row = db.get(ImageSet, spec.val_set_id)
        if model_row is None or train_row is None or val_row is None:
            raise RuntimeError("the model or an image set of this attack no longer exists")
        ckpt, _ = resolve_weights(db, ctx.store, model_row, None, spec.checkpoint_path)
        train = open_db_image_set(db, train_row)
        val = open_db_image_set(db, val_row)
        init_scans = None
        if spec.init_scan_job_id is not None:
            scan = load_scan(db, spec.init_scan_job_id, spec.train_set_id)
            init_scans = {layer: layer_scan(ctx.store, scan, layer) for layer in spec.attack.layers}
        db.expunge(model_row)
    ctx.reporter.stage("load model")
    model = load_db_model(model_row, ckpt, ctx.device)
    layers = [model.layer(l).name for l in spec.attack.layers]
    cfg = attack_config(spec.attack, layers, ctx.device)
    targets = materialize_targets(spec.attack.target_images, ctx) if spec.attack.target_images else None
    if targets is not None:
        cfg.target_images = [t["path"] for t in targets]
    cfg.validate()
    res = run_attack(model, train, val, cfg, out_dir=ctx.work_dir, reporter=ctx.reporter, init_scans=init_scans,
                     resume=True)
    ctx.reporter.stage("store weights")
    accuracy = accuracy_of(res)
    with ctx.session() as db:
        sel = ctx.store.put_file(db, res.selected_path, "checkpoint", ".safetensors", move=False)
        fin = ctx.store.put_file(db, res.final_path, "checkpoint", ".safetensors", move=False)
        summary = res.summary()
        summary.pop("selected_path", None)
        summary.pop("final_path", None)
        if ctx.run_id is not None:
            run = db.get(Run, ctx.run_id)
            run.accuracy = clean_json(accuracy)
            run.alpha_trajectory = clean_json([asdict(e) for e in res.alpha_trajectory])
            run.history = clean_json(res.history)
            run.attack_summary = clean_json(summary)
            run.selected_id, run.final_id = sel.id, fin.id
            info = dict(run.layer_info or {})
            for layer in layers:
                info[layer] = {**info.get(layer, {}), "units": model.layer(layer).units,
                               "attacked": res.attacked[layer], "dead": res.dead[layer]}
            run.layer_info = clean_json(info)
            if not run.layers:
                run.layers = layers
    ctx.log(f"attack done: {res.steps} steps, accuracy {res.acc_init:.2f} → {res.acc_selected:.2f} "
            f"(selected step {res.selected_step}{', final state over budget' if res.final_over_budget else ''})")
    out = {"selected_sha": sel.sha256, "final_sha": fin.sha256, "accuracy": clean_json(accuracy),
           "attacked": res.attacked, "dead": res.dead, "decoy_ids": res.decoy_ids, "layers": layers,
           "decoy_class": spec.attack.decoy_class, "kind": spec.attack.kind}
    if targets is not None:
        out["targets"] = target_map(targets, model.check_units(layers[0], spec.attack.units), res.attacked[layers[0]])
    return out


def materialize_targets(refs, ctx) -> list[dict]:
    """The Slingshots targets as stored PNG artifacts (kind ``target_image``) with their files: an
    upload is already one; an image of a registered set is decoded and stored, so the run can show
    exactly the image the attack aimed at even if the set changes."""
    from fvaudit.db.tables import Artifact
    from fvaudit.jobs.common import open_db_image_set
    from fvaudit.jobs.validate import TARGET_ARTIFACT_KIND, target_png

    out = []
    with ctx.session() as db:
        for ref in refs:
            if ref.artifact_id is not None:
                art = db.get(Artifact, ref.artifact_id)
                if art is None:
                    raise RuntimeError(f"target image {ref.artifact_id} no longer exists")
            else:
                row = db.get(ImageSet, ref.image_set_id)
                if row is None:
                    raise RuntimeError(f"image set {ref.image_set_id} of a target image no longer exists")
                art = ctx.store.put_bytes(db, target_png(open_db_image_set(db, row).load_pil(int(ref.image_id))),
                                          TARGET_ARTIFACT_KIND, ".png")
            out.append({"artifact_id": art.id, "path": str(ctx.store.path(art)),
                        "source": ref.model_dump(exclude_none=True)})
    return out


def target_map(targets: list[dict], requested: list[int], attacked: list[int]) -> dict:
    """attacked unit → its target's artifact id (one target for every unit, or one per requested
    unit; a dead unit, left out of the attack, has none)."""
    from fvaudit.engine.attack.kinds import per_attacked_unit

    ids = per_attacked_unit([t["artifact_id"] for t in targets], requested, attacked)
    return {"units": {str(u): a for u, a in zip(attacked, ids)}, "sources": [t["source"] for t in targets]}
