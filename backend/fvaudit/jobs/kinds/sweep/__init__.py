"""Job kind ``sweep``: a grid of values for named spec fields, each point pruned and audited.

A chain built from the registry (SPEC §5, thesis Chapter 4; the shape of Celery's
``group``: independent points, one record of truth per job row). Every point starts from
``base`` (a model, optional prune parameters, the attack) with the grid's values set at
their dotted field names (``prune.method``, ``prune.rate``, ``attack.layers``,
``model_id``, any field of those), and expands to

    [prune + fine-tune ─▶] scan θ_init ─▶ push-down ─▶ scan θ_selected ─▶ scan θ_final ─▶ metrics
                                     └──▶ push-up   ─▶ scan θ_selected ─▶ scan θ_final ─▶ metrics

reusing the audit chain's steps (:class:`~fvaudit.jobs.kinds.audit.AuditKind`), one θ_init
scan shared by the point's attacks. With ``baseline`` the unpruned base model is point 0:
the rate-0 start of every curve, and the push-down run whose per-unit CLIP-δ ranks the
channels of vulnerability pruning (those prune steps wait for its metrics).

The model a pruned point audits is created when the sweep is launched (a row with no
checkpoint, ``prune_job_id`` naming the step that fills it), so the point's steps name it
at expand time like any model; the worker refuses to load it before its prune job
succeeded, which the step order guarantees. Points are independent: a failed step fails
only the steps after it in its point (the sweep reports the failure with its reason, the
other points keep running and keep their results); cancel and the reaper treat the sweep
like every chain. ``sweep_points`` rows map each point to its model and runs: the
results table (``GET /sweeps/{id}/table``) is read from them.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr, ValidationError, ValidationInfo, \
    field_validator
from sqlalchemy.orm import Session

from fvaudit.db.tables import Job, Model, SweepPoint, User
from fvaudit.engine.attack.kinds import ATTACK_KINDS
from fvaudit.jobs.kinds.attack import new_attack_run
from fvaudit.jobs.kinds.audit import AuditKind, AuditSpec, control_params
from fvaudit.jobs.kinds.prune import PruneParams, PruneSpec, check_prune, new_pruned_model
from fvaudit.jobs.registry import JobKind, Step, StepInfo, register_kind
from fvaudit.jobs.specs import AttackParams, DbId, DecoyClass, Embedder, Name, Strict, attack_rules, unused_given
from fvaudit.jobs.validate import FieldError, get_image_set, get_model

#: the attacks a sweep point can run: every kind with an attack loss (the kinds table)
AttackName = Literal[tuple(k for k, v in ATTACK_KINDS.items() if v.attack_loss)]  # type: ignore[valid-type]
MAX_POINTS = 64
FIELD_RE = r"^(model_id|prune|prune\.[a-z_]+|prune\.finetune\.[a-z_]+|attack\.[a-z_]+)$"


class SweepBase(Strict):
    """The spec every grid point starts from."""

    model_id: DbId
    prune: PruneParams | None = Field(None, description="null: audit the model as it is")
    attack: AttackParams = Field(description="the attack settings; its kind is set by the sweep's attacks")


class GridAxis(Strict):
    field: str = Field(pattern=FIELD_RE, max_length=100,
                       description="dotted field of base: model_id, prune, prune.<field>, prune.finetune.<field>, "
                                   "attack.<field>")
    values: list[JsonValue] = Field(min_length=1, max_length=64)


class SweepSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "norm vs vulnerability", "train_set_id": 1, "val_set_id": 2,
         "base": {"model_id": 1, "prune": {"method": "norm", "rate": 0.5, "finetune": {"steps": 100}},
                  "attack": {"layers": ["relu3"], "steps": 200}},
         "grid": [{"field": "prune.method", "values": ["norm", "vulnerability"]},
                  {"field": "prune.rate", "values": [0.25, 0.5]}],
         "attacks": ["push_down", "push_up"], "decoy_class": "Bag"}]})
    name: Name | None = None
    train_set_id: DbId
    val_set_id: DbId
    base: SweepBase
    grid: list[GridAxis] = Field(default_factory=list, max_length=4,
                                 description="every combination of the axes' values is a point (at most 64)")
    baseline: bool = Field(True, description="point 0: the unpruned base model (the curves' rate 0; the push-down "
                                             "run that vulnerability pruning ranks channels by)")
    attacks: list[AttackName] = Field(default_factory=lambda: ["push_down", "push_up"], min_length=1,
                                      max_length=len(ATTACK_KINDS))
    decoy_class: DecoyClass | None = Field(None, validate_default=True,
                                           description="push-up decoy class: index (a number) or name (a string); "
                                                       "only with push_up in attacks")
    k_clip: int = Field(5, gt=0, le=100)
    embedder: Embedder = "auto"
    scan_batch_size: int = Field(256, gt=0, le=8192)
    control: bool = Field(False, description="an α = 0 control per audit (doubles the attacks)")
    visualize: bool = Field(False, description="synthetic visualizations per audit")
    _plan: list["Point"] = PrivateAttr(default_factory=list)

    @field_validator("attacks")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("an attack is listed twice")
        return v

    @field_validator("decoy_class")
    @classmethod
    def _decoy(cls, v, info: ValidationInfo):
        needs = [a for a in (info.data.get("attacks") or []) if ATTACK_KINDS[a].decoy]
        if needs and v is None:
            raise ValueError(f"{needs[0]} needs a decoy class")
        return v

    @field_validator("grid")
    @classmethod
    def _axes(cls, v):
        if len({a.field for a in v}) != len(v):
            raise ValueError("a field is swept twice")
        n = 1
        for a in v:
            n *= len(a.values)
        if n > MAX_POINTS:
            raise ValueError(f"the grid has {n} points; at most {MAX_POINTS}")
        return v


@dataclass
class Point:
    """One grid point: its values (by field), label and spec; ids are filled at creation."""

    idx: int
    label: str
    values: dict[str, Any]
    base: SweepBase
    baseline: bool = False
    delta_from_baseline: bool = False
    value_idx: dict[int, int] = field(default_factory=dict)   # grid axis → index of its value here
    model_id: int | None = None                  # the audited model (a pruned point's new row)
    runs: dict[str, int] = field(default_factory=dict)
    decoy_class: int | str | None = None         # the push-up decoy, as checked (a class index)


# ---------------------------------------------------------------- the grid

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{100 * v:g}%" if 0 < v < 1 else f"{v:g}"
    if isinstance(v, list):
        return "+".join(map(_fmt, v))
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))[:60]
    return str(v)


def point_label(base: SweepBase, values: dict[str, Any], baseline: bool) -> str:
    if baseline:
        return "unpruned"
    parts = [base.prune.label()] if base.prune is not None else []
    parts += [f"{f.rsplit('.', 1)[-1]}={_fmt(v)}" for f, v in values.items() if not f.startswith("prune")]
    return (", ".join(parts) or "base")[:120]


def _set(doc: dict, path: tuple[str, ...], value: Any, loc: tuple) -> None:
    cur = doc
    for i, part in enumerate(path[:-1]):
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            raise FieldError(loc, f"base.{'.'.join(path[:i + 1])} is null: give it in base to sweep "
                                  f"{'.'.join(path)}")
        cur = nxt
    cur[path[-1]] = value


def _point_loc(spec: SweepSpec, rel: tuple, value_idx: dict[int, int]) -> tuple:
    """Where a point's field sits in the request: the grid value that set it, else base."""
    for i, ax in enumerate(spec.grid):
        path = tuple(ax.field.split("."))
        if rel[:len(path)] == path:
            return ("spec", "grid", i, "values", value_idx[i]) + tuple(rel[len(path):])
    return ("spec", "base") + tuple(rel)


def plan_points(spec: SweepSpec) -> list[Point]:
    """Every point of the grid, validated as a base spec (pure: no database)."""
    points: list[Point] = []
    if spec.baseline:
        points.append(Point(0, "unpruned", {}, spec.base.model_copy(update={"prune": None}), baseline=True))
    axes = [list(enumerate(a.values)) for a in spec.grid]
    for combo in itertools.product(*axes):
        doc = spec.base.model_dump(mode="json")
        values: dict[str, Any] = {}
        idx = {i: j for i, (j, _) in enumerate(combo)}
        for i, (j, v) in enumerate(combo):
            f = spec.grid[i].field
            _set(doc, tuple(f.split(".")), v, ("spec", "grid", i, "field"))
            values[f] = v
        try:
            base = SweepBase.model_validate(doc)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = tuple(e["loc"])
            for i, ax in enumerate(spec.grid):
                if e["type"] == "extra_forbidden" and loc == tuple(ax.field.split(".")):
                    raise FieldError(("spec", "grid", i, "field"), f"no field {loc[-1]} in base."
                                                                   f"{'.'.join(loc[:-1]) or 'model'}") from None
            raise FieldError(_point_loc(spec, loc, idx), e["msg"]) from None
        points.append(Point(len(points), point_label(base, values, False), values, base, value_idx=idx))
    return points


def audit_spec(spec: SweepSpec, pt: Point, attack: str, model_id: int | None = None, name: str | None = None
               ) -> AuditSpec:
    a = pt.base.attack.for_kind(attack, **({"decoy_class": spec.decoy_class} if ATTACK_KINDS[attack].decoy else {}))
    return AuditSpec(name=name, model_id=model_id or pt.base.model_id, train_set_id=spec.train_set_id,
                     val_set_id=spec.val_set_id, attack=a, k_clip=spec.k_clip, embedder=spec.embedder,
                     scan_batch_size=spec.scan_batch_size, control=spec.control, visualize=spec.visualize)


def _sweep_loc(spec: SweepSpec, loc: tuple, pt: Point) -> tuple:
    """An audit check's loc (``spec.attack...``, ``spec.model_id``, ``spec.k_clip``) in the sweep's body."""
    rel = tuple(loc[1:])
    if rel[:2] == ("attack", "decoy_class"):
        return ("spec", "decoy_class")
    if rel and rel[0] in ("attack", "model_id", "prune"):
        return _point_loc(spec, rel, pt.value_idx)
    return ("spec",) + rel


def check_point(db: Session, user: User, spec: SweepSpec, pt: Point, baseline: Point | None) -> Point:
    vidx = pt.value_idx
    model = get_model(db, pt.base.model_id, _point_loc(spec, ("model_id",), vidx))   # refuses one not made yet
    attack = pt.base.attack
    if attack.kind != "push_down":
        raise FieldError(_point_loc(spec, ("attack", "kind"), vidx),
                         "a sweep's attacks set the attack kind: list them in attacks, leave attack.kind out")
    bad = unused_given(attack, attack_rules(spec.attacks))        # the rule of every attack spec
    if bad is not None:
        raise FieldError(_point_loc(spec, ("attack", bad[0]), vidx), bad[1].replace("this attack", "this sweep"))
    for a in spec.attacks:
        try:
            checked = AuditKind().check(db, user, audit_spec(spec, pt, a))
        except FieldError as exc:
            raise FieldError(_sweep_loc(spec, exc.loc, pt), exc.msg) from None
        if a == spec.attacks[0]:
            attack = attack.model_copy(update={"layers": checked.attack.layers})
        if ATTACK_KINDS[a].decoy:
            pt.decoy_class = checked.attack.decoy_class
    p = pt.base.prune
    if p is not None:
        if p.method == "vulnerability" and p.layer is None:
            p = p.model_copy(update={"layer": attack.layers[0]})
        pending = (p.method == "vulnerability" and p.channels is None and p.delta_run_id is None
                   and baseline is not None and "push_down" in spec.attacks
                   and baseline.base.model_id == pt.base.model_id)
        try:
            p = check_prune(db, user, model, p, ("spec", "prune"), delta_pending=pending)
        except FieldError as exc:
            raise FieldError(_sweep_loc(spec, exc.loc, pt), exc.msg) from None
        if pending and spec.embedder == "none":
            raise FieldError(("spec", "embedder"), "vulnerability pruning ranks channels by the baseline push-down's "
                                                   "CLIP-δ, which embedder none does not measure")
        if pending:
            layers = baseline.base.attack.layers if baseline.base.attack.layers else []
            if p.layer not in layers and p.layer not in attack.layers:
                raise FieldError(_point_loc(spec, ("prune", "delta_run_id"), vidx),
                                 f"vulnerability pruning of {p.layer} needs a push-down run of that layer: the "
                                 f"baseline attacks {', '.join(layers)}; give delta_run_id")
            pt.delta_from_baseline = True
        if p.method == "vulnerability" and attack.units is not None and p.layer in attack.layers:
            raise FieldError(_point_loc(spec, ("attack", "units"), vidx),
                             f"units cannot be chosen when the attacked layer {p.layer} loses channels")
        lim = p.finetune.train_limit
        train = get_image_set(db, spec.train_set_id, ("spec", "train_set_id"))
        if lim is not None and lim > train.size:
            raise FieldError(_point_loc(spec, ("prune", "finetune", "train_limit"), vidx),
                             f"train_limit = {lim} is larger than the training set ({train.size} images)")
    pt.base = pt.base.model_copy(update={"attack": attack, "prune": p})
    return pt


@register_kind
class SweepKind(JobKind):
    name = "sweep"
    title = "sweep"
    description = ("a grid of values for named spec fields (prune method and rate, attacked layers, models): each "
                   "point pruned and fine-tuned, then its push-down and push-up audits (SPEC §5)")
    spec = SweepSpec
    routes = "fvaudit.jobs.kinds.sweep.routes"
    #: each point's runs follow their own steps (a failed point does not mark the others' runs failed)
    runs_follow_steps = True
    steps = (StepInfo("prune", "prune + fine-tune"), StepInfo("scan_init", "scan θ_init"),
             *[s for s in AuditKind.steps if s.key != "scan_init"])

    def step_label(self, key: str | None) -> str | None:
        m = re.fullmatch(r"p(\d+)\.(?:(" + "|".join(ATTACK_KINDS) + r")\.)?(\w+)", key or "")
        if not m:
            return None
        idx, attack, step = m.groups()
        inner = AuditKind().step_label(step) or super().step_label(step) or step
        return f"point {idx} · " + (f"{attack.replace('_', '-')} · " if attack else "") + inner

    def check(self, db, user, spec: SweepSpec) -> SweepSpec:
        L = ("spec",)
        if spec.decoy_class is not None and not any(ATTACK_KINDS[a].decoy for a in spec.attacks):
            raise FieldError(L + ("decoy_class",), f"only push_up and push_up_slingshot use a decoy class (this sweep: "
                                                   f"{', '.join(spec.attacks)}): leave decoy_class out")
        get_image_set(db, spec.train_set_id, L + ("train_set_id",))
        get_image_set(db, spec.val_set_id, L + ("val_set_id",))
        points = plan_points(spec)
        if not points:
            raise FieldError(L + ("grid",), "no point: give a grid, or keep the baseline")
        baseline = points[0] if spec.baseline else None
        for pt in points:
            check_point(db, user, spec, pt, baseline)
        if any(ATTACK_KINDS[a].decoy for a in spec.attacks):
            spec = spec.model_copy(update={"decoy_class": points[0].decoy_class})
        spec._plan = points
        return spec

    def _points(self, spec: SweepSpec) -> list[Point]:
        if not spec._plan:
            raise RuntimeError("a sweep is expanded after its check (which plans its points)")
        return spec._plan

    def runs(self, db, user, spec: SweepSpec) -> dict:
        name = spec.name or f"{db.get(Model, spec.base.model_id).name} sweep"
        out: dict = {}
        for pt in self._points(spec):
            pt.model_id = pt.base.model_id
            if pt.base.prune is not None:
                parent = db.get(Model, pt.base.model_id)
                pt.model_id = new_pruned_model(db, user.id, parent, pt.base.prune, f"{name} · {pt.label}"[:200]).id
            for a in spec.attacks:
                au = audit_spec(spec, pt, a, pt.model_id)
                run = new_attack_run(db, user, au, f"{name[:150]} · {pt.label} · {a.replace('_', '-')}")
                run.embedder = spec.embedder
                out[f"p{pt.idx}.{a}"] = run
                pt.runs[a] = run.id
                if spec.control:
                    out[f"p{pt.idx}.{a}.control"] = new_attack_run(
                        db, user, au, f"{run.name[:270]} · α = 0 control", control_params(au.attack))
                    out[f"p{pt.idx}.{a}.control"].embedder = spec.embedder
        out["main"] = out[f"p0.{spec.attacks[0]}"]
        return out

    def created(self, db, runs, ids) -> None:
        """Link every point's model to its prune step, its controls to its runs; write the points."""
        sweep_id = runs["main"].job_id
        spec = SweepSpec.model_validate(db.get(Job, sweep_id).spec)
        for key, run in runs.items():
            if key.endswith(".control"):
                runs[key[:-len(".control")]].control_run_id = run.id
        for pt in plan_points(spec):
            model_id = runs[f"p{pt.idx}.{spec.attacks[0]}"].model_id
            prune_job = ids.get(f"p{pt.idx}.prune")
            if prune_job is not None:
                db.get(Model, model_id).prune_job_id = prune_job
            db.add(SweepPoint(sweep_job_id=sweep_id, idx=pt.idx, label=pt.label, values=pt.values,
                              model_id=model_id, prune_job_id=prune_job,
                              runs={a: runs[f"p{pt.idx}.{a}"].id for a in spec.attacks}))

    def expand(self, spec: SweepSpec) -> list[Step]:
        points = self._points(spec)
        steps: list[Step] = []
        base_metrics = "p0.push_down.metrics"
        for pt in points:
            pre = f"p{pt.idx}."
            first_after = None
            if pt.base.prune is not None:
                p = pt.base.prune

                def prune_spec(ids, pt=pt, p=p) -> PruneSpec:
                    pp = p.model_copy(update={"delta_run_id": points[0].runs["push_down"]}) \
                        if pt.delta_from_baseline else p
                    return PruneSpec(name=None, model_id=pt.base.model_id, train_set_id=spec.train_set_id,
                                     val_set_id=spec.val_set_id, prune=pp)

                steps.append(Step(pre + "prune", "prune", prune_spec,
                                  after=base_metrics if pt.delta_from_baseline else None,
                                  run=f"p{pt.idx}.{spec.attacks[0]}"))
                first_after = pre + "prune"
            for j, a in enumerate(spec.attacks):
                inner = AuditKind().expand(audit_spec(spec, pt, a, pt.model_id, pt.label))
                for s in inner:
                    if j > 0 and s.key == "scan_init":
                        continue       # one θ_init scan per point, shared by its attacks
                    steps.append(Step(self._key(pre, a, s.key), s.kind, self._wrap(s, pre, a),
                                      after=self._key(pre, a, s.after) if s.after else first_after,
                                      run=f"p{pt.idx}.{a}" + ("" if s.run == "main" else f".{s.run}")))
        return steps

    @staticmethod
    def _key(pre: str, attack: str, key: str) -> str:
        return pre + ("scan_init" if key == "scan_init" else f"{attack}.{key}")

    @classmethod
    def _wrap(cls, s: Step, pre: str, attack: str):
        def spec_of(ids: dict[str, int]) -> BaseModel:
            view = {k[len(pre):].removeprefix(f"{attack}."): v for k, v in ids.items() if k.startswith(pre)
                    and (k == pre + "scan_init" or k.startswith(f"{pre}{attack}."))}
            return s.spec(view)
        return spec_of


def sweep_points(db: Session, sweep_id: int) -> list[SweepPoint]:
    from sqlalchemy import select

    return list(db.scalars(select(SweepPoint).where(SweepPoint.sweep_job_id == sweep_id).order_by(SweepPoint.idx)))


def point_records(db: Session, job: Job) -> list[dict]:
    """The sweep's points as :mod:`fvaudit.engine.defence.sweep_table` reads them: values, what was pruned
    (the prune record of the point's model), and each audit's run status and Table 3.1 rows."""
    from fvaudit.db.tables import Run

    spec = SweepSpec.model_validate(job.spec)
    plan = {p.idx: p for p in plan_points(spec)}
    out = []
    for sp in sweep_points(db, job.id):
        pt = plan.get(sp.idx)
        p = pt.base.prune if pt is not None else None
        model = db.get(Model, sp.model_id) if sp.model_id else None
        prune_job = db.get(Job, sp.prune_job_id) if sp.prune_job_id else None
        rec = (model.prune if model is not None else None) or None
        audits = {}
        for attack in spec.attacks:           # in the sweep's order (JSONB does not keep key order)
            run_id = (sp.runs or {}).get(attack)
            if run_id is None:
                continue
            run = db.get(Run, run_id)
            audits[attack] = {"run_id": run_id, "status": run.status if run else "deleted",
                              "rows": list(run.rows or []) if run else [], "error": run.error if run else None}
        out.append({"idx": sp.idx, "label": sp.label, "values": sp.values or {},
                    "method": p.method if p is not None else None,
                    "rate": (rec or {}).get("rate", p.rate if p is not None else None),
                    # the attacked layer (its Table 3.1 row), or "all" (the pooled row) for several
                    "layer": None if pt is None else (pt.base.attack.layers[0] if len(pt.base.attack.layers) == 1
                                                      else "all"),
                    "model_id": sp.model_id, "prune_job_id": sp.prune_job_id,
                    "prune_status": prune_job.status if prune_job else None,
                    "prune_error": prune_job.error if prune_job else None,
                    "prune": None if rec is None else {k: rec.get(k) for k in (
                        "weight_rate", "filter_rate", "finetuned_acc", "acc_n_images", "parent_acc", "pruned_acc",
                        "finetune", "channels", "layer")},
                    "audits": audits})
    return out
