"""Job kind ``audit``: the launch form's one request, a chain of runnable steps (data).

    scan θ_init ─▶ attack ─▶ scan θ_selected ─▶ scan θ_final ─▶ metrics ─▶ synthetic visualization
        └──────▶ α = 0 control attack ─▶ scan control ─▶ control metrics

Every state that matters is measured (SPEC §2): the selected state (the latest within
the accuracy budget on the full validation set) and the final one, so the run's rows
hold both. With ``control`` (default) the same settings are fine-tuned with α = 0 into
a run of their own, linked as ``control_run_id``: an attack is only as convincing as its
control (thesis Table 3.1, row 1). With ``visualize`` (default) the synthetic images of
every unit of the attacked layers are rendered under θ_init and θ_selected (SPEC §4).
The steps run after metrics so a failing render never costs the measured result.
"""
from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from fvaudit.jobs.kinds.attack import AttackSpec, check_attack_spec, new_attack_run, run_name
from fvaudit.jobs.kinds.metrics import MetricsSpec
from fvaudit.jobs.kinds.scan import ScanSpec
from fvaudit.jobs.kinds.visualize import VisualizeSpec
from fvaudit.jobs.registry import JobKind, Step, StepInfo, register_kind
from fvaudit.jobs.specs import AttackParams, DbId, Embedder, Name, PathStr, Strict, WeightsRef
from fvaudit.jobs.validate import FieldError, check_embedder


class AuditSpec(Strict):
    """What the launch form sends: scan θ_init → attack → scans → metrics (→ control, visualize)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "conv3 push-down", "model_id": 1, "train_set_id": 1, "val_set_id": 2,
         "attack": {"kind": "push_down", "layers": ["relu3"], "units": None, "steps": 200},
         "k_clip": 5, "embedder": "auto", "visualize": True, "control": True}]})
    name: Name | None = None
    model_id: DbId
    train_set_id: DbId
    val_set_id: DbId
    attack: AttackParams
    k_clip: int = Field(5, gt=0, le=100, description="top-k size of the CLIP metrics (≤ attack.k)")
    embedder: Embedder = "auto"
    scan_batch_size: int = Field(256, gt=0, le=8192)
    scan_shards: int = Field(1, ge=1, le=64, description="split every scan into this many row ranges, run as "
                                                         "scan_shard jobs on free workers and merged exactly")
    checkpoint_path: PathStr | None = None
    control: bool = Field(True, description="also run the α = 0 fine-tune with the same settings, measured the same "
                                            "way, as the control")
    visualize: bool = Field(True, description="add the synthetic visualization step (SPEC §4)")
    n_synth: int = Field(4, ge=1, le=64, description="synthetic images per unit (seeds 0 .. n_synth − 1)")
    synth_steps: int = Field(256, ge=1, le=100_000, description="gradient-ascent steps per synthetic image")
    synth_objective: Literal["score", "channel_mean"] = Field("score", description="a_j of SPEC §1, or the "
                                                                                   "channel mean")


def control_params(a: AttackParams) -> AttackParams:
    """The α = 0 fine-tune with the attack's settings (its layers only pick the scanned units);
    the fields a fine-tune does not use (decoys, the α controller) back at their defaults."""
    return a.for_kind("finetune")


@register_kind
class AuditKind(JobKind):
    name = "audit"
    title = "audit"
    description = ("scan θ_init → attack → scan θ_selected and θ_final → metrics, with the α = 0 control and "
                   "synthetic visualizations")
    spec = AuditSpec
    steps = (StepInfo("scan_init", "scan θ_init"), StepInfo("attack", "attack"),
             StepInfo("scan_selected", "scan θ_selected"), StepInfo("scan_final", "scan θ_final"),
             StepInfo("metrics", "metrics"), StepInfo("visualize", "synthetic visualization"),
             StepInfo("control_attack", "α = 0 control"), StepInfo("control_scan", "scan control"),
             StepInfo("control_metrics", "control metrics"))

    def check(self, db, user, spec: AuditSpec) -> AuditSpec:
        L = ("spec",)
        spec, _, train, val = check_attack_spec(db, user, spec, L)
        if spec.k_clip > spec.attack.k:
            raise FieldError(L + ("k_clip",), f"k_clip = {spec.k_clip} is larger than the attacked top-k "
                                              f"(attack.k = {spec.attack.k})")
        if spec.attack.k > val.size:
            raise FieldError(L + ("attack", "k"), f"k = {spec.attack.k} is larger than the validation set "
                                                  f"{val.name} ({val.size} images)")
        return spec.model_copy(update={"embedder": check_embedder(spec.embedder, L + ("embedder",))})

    def runs(self, db, user, spec: AuditSpec) -> dict:
        name = run_name(db, spec)
        runs = {"main": new_attack_run(db, user, spec, name)}
        runs["main"].embedder = spec.embedder
        if spec.control:
            runs["control"] = new_attack_run(db, user, spec, f"{name} · α = 0 control", control_params(spec.attack))
            runs["control"].embedder = spec.embedder
        return runs

    def created(self, db, runs, ids) -> None:
        if "control" in runs:
            runs["main"].control_run_id = runs["control"].id

    def expand(self, spec: AuditSpec) -> list[Step]:
        a = spec.attack
        sets = list(dict.fromkeys([spec.train_set_id, spec.val_set_id]))
        k_scan = max(a.k, spec.k_clip)
        name = spec.name

        def scan(weights_from: WeightsRef | None = None, ckpt: str | None = None) -> ScanSpec:
            return ScanSpec(model_id=spec.model_id, image_set_ids=sets, layers=a.layers, k=k_scan,
                            batch_size=spec.scan_batch_size, weights_from=weights_from, checkpoint_path=ckpt,
                            shards=spec.scan_shards)

        def attack(params: AttackParams, ids: dict, label: str | None) -> AttackSpec:
            return AttackSpec(name=label, model_id=spec.model_id, train_set_id=spec.train_set_id,
                              val_set_id=spec.val_set_id, attack=params, init_scan_job_id=ids["scan_init"],
                              checkpoint_path=spec.checkpoint_path)

        def metrics(ids: dict, attack_key: str, after: str, final: str | None) -> MetricsSpec:
            return MetricsSpec(name=name, before_scan_job_id=ids["scan_init"], after_scan_job_id=ids[after],
                               final_scan_job_id=ids[final] if final else None, val_set_id=spec.val_set_id,
                               train_set_id=spec.train_set_id, attack_job_id=ids[attack_key], layers=a.layers,
                               k_clip=spec.k_clip, embedder=spec.embedder)

        steps = [
            Step("scan_init", "scan", lambda ids: scan(ckpt=spec.checkpoint_path)),
            Step("attack", "attack", lambda ids: attack(a, ids, name), after="scan_init"),
            Step("scan_selected", "scan", lambda ids: scan(WeightsRef(job_id=ids["attack"], state="selected")),
                 after="attack"),
            Step("scan_final", "scan", lambda ids: scan(WeightsRef(job_id=ids["attack"], state="final")),
                 after="scan_selected"),
            Step("metrics", "metrics", lambda ids: metrics(ids, "attack", "scan_selected", "scan_final"),
                 after="scan_final"),
        ]
        if spec.visualize:
            steps.append(Step("visualize", "visualize", lambda ids: VisualizeSpec(
                model_id=spec.model_id, layers=a.layers, units=None, n_synth=spec.n_synth, steps=spec.synth_steps,
                objective=spec.synth_objective, weights_from=WeightsRef(job_id=ids["attack"], state="selected"),
                checkpoint_path=spec.checkpoint_path, val_set_id=spec.val_set_id,
                before_scan_job_id=ids["scan_init"], after_scan_job_id=ids["scan_selected"], k_clip=spec.k_clip,
                embedder=spec.embedder), after="metrics"))
        if spec.control:
            steps += [
                Step("control_attack", "attack", lambda ids: attack(control_params(a), ids, None),
                     after="scan_init", run="control"),
                Step("control_scan", "scan", lambda ids: scan(WeightsRef(job_id=ids["control_attack"],
                                                                         state="selected")),
                     after="control_attack", run="control"),
                Step("control_metrics", "metrics", lambda ids: metrics(ids, "control_attack", "control_scan", None),
                     after="control_scan", run="control"),
            ]
        return steps
