"""The audit pipeline: scan θ_init → attack → scan θ_final → measure (SPEC §1–§3).

Used by the CLI (``fvaudit attack``, ``fvaudit demo-experiment``) and by the service's
jobs. Writes a run directory:

  config.json, versions.json          what ran, with which code and libraries
  attack.json                         accuracy before/after, attacked and dead units, α trajectory
  alpha_trajectory.csv, history.csv   α changes, per-step losses
  selected.safetensors, final.safetensors, checkpoint/
  scores/<set>_<state>_<layer>.npy    score matrices [N, J] float32
  topk/<set>_<state>_<layer>.json     per-unit top-k ids and scores
  metrics_<layer>.json / .csv         per-unit metrics, aggregates
  table.txt                           the Table 3.1 row(s)
"""
from __future__ import annotations

import csv
import dataclasses
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fvaudit.engine.scans.activations import LayerScan, ScanResult, scan
from fvaudit.engine.attack.kinds import ATTACK_KINDS
from fvaudit.engine.attack.config import AttackConfig
from fvaudit.engine.attack.run import AttackResult, run_attack
from fvaudit.engine.data.images import ImageSet
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.progress import NullReporter, Reporter
from fvaudit.engine.measure.report import (METRIC_NAMES, LayerMetrics, TableRow, format_table, live_units, measure_layer,
                                   pushup_report, write_layer_metrics)


def versions() -> dict:
    import torch

    import fvaudit

    out = {"fvaudit": fvaudit.__version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "platform": platform.platform()}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except Exception:  # pragma: no cover
        pass
    return out


def write_scan(result: ScanResult, out_dir: Path, set_name: str, state: str) -> dict[str, dict]:
    """Score matrices as .npy and top-k as JSON; returns {layer: {scores, topk}} paths."""
    paths = {}
    (out_dir / "scores").mkdir(parents=True, exist_ok=True)
    (out_dir / "topk").mkdir(parents=True, exist_ok=True)
    for layer, ls in result.layers.items():
        safe = layer.replace("/", "_")
        sp = out_dir / "scores" / f"{set_name}_{state}_{safe}.npy"
        if ls.path is None or Path(ls.path) != sp:
            np.save(sp, np.asarray(ls.scores, dtype=np.float32))
        tp = out_dir / "topk" / f"{set_name}_{state}_{safe}.json"
        tp.write_text(json.dumps({"layer": layer, "image_set": result.image_set, "k": result.k,
                                  "dead_units": ls.dead_units, "ids": ls.topk_ids.tolist(),
                                  "scores": ls.topk_scores.tolist(), "skipped": len(result.skipped)}))
        paths[layer] = {"scores": str(sp), "topk": str(tp)}
    return paths


@dataclass
class StateMeasure:
    """One measured state of an attacked model (SPEC §3): the selected state, the final state,
    or an α = 0 control's. ``rows`` gives its Table 3.1 rows."""

    state: str                                   # "selected" | "final" | "control"
    metrics: dict[str, LayerMetrics]
    train_overlap: dict[str, float | None]
    pushup: dict | None = None                   # {"train"|"val"|"train_init"|"val_init": {layer: success}}
    acc: float | None = None                     # top-1 % on the full validation set
    acc_init: float | None = None
    acc_n_images: int | None = None
    step: int | None = None
    over_budget: bool = False

    @property
    def delta_acc(self) -> float | None:
        return None if self.acc is None or self.acc_init is None else self.acc - self.acc_init

    def rows(self, name: str) -> list[TableRow]:
        """One row per layer, plus an ``all`` row (mean over every attacked unit) for several layers."""
        layers = list(self.metrics)
        out = [self._row(name if len(layers) == 1 else f"{name} [{l}]", {l: self.metrics[l]}, l) for l in layers]
        if len(layers) > 1:
            out.append(self._row(f"{name} [all]", self.metrics, "all"))
        return out

    def _row(self, name: str, metrics: dict[str, LayerMetrics], layer: str) -> TableRow:
        vals: dict[str, float | None] = {}
        for m in METRIC_NAMES:
            xs = [v for lm in metrics.values() for u, v in lm.per_unit.get(m, {}).items()
                  if u in set(lm.attacked) and v is not None and np.isfinite(v)]
            vals[m] = float(np.mean(xs)) if xs else None
        return TableRow(name, vals, self.acc, self.delta_acc, state=self.state, step=self.step,
                        acc_n_images=self.acc_n_images, over_budget=self.over_budget, layer=layer)

    def to_json(self) -> dict:
        return {"state": self.state, "acc": self.acc, "acc_init": self.acc_init, "delta_acc": self.delta_acc,
                "acc_n_images": self.acc_n_images, "step": self.step, "over_budget": self.over_budget,
                "train_topk_overlap": self.train_overlap, "pushup": self.pushup,
                "aggregates": {l: m.to_json()["aggregates"] for l, m in self.metrics.items()}}


@dataclass
class StateScans:
    """The scans one state is measured from, per layer: θ_init and the state on D_τ (the
    validation set) and, for the training-set overlap, the dead units and the push-up success
    on the training set, the same two on the training set."""

    init_val: dict[str, LayerScan]
    final_val: dict[str, LayerScan]
    init_train: dict[str, LayerScan] | None = None
    final_train: dict[str, LayerScan] | None = None

    def train(self, layer: str) -> tuple[LayerScan, LayerScan] | None:
        both = self.init_train is not None and self.final_train is not None
        return (self.init_train[layer], self.final_train[layer]) if both and layer in self.init_train \
            and layer in self.final_train else None


@dataclass
class StateFacts:
    """What the attack says about the state measured: which state, which units it attacked
    (None: every live unit, e.g. a control) and which were dead, its accuracy on the full
    validation set, and a push-up's decoys."""

    state: str = "selected"
    attacked: dict[str, Sequence[int]] | None = None
    dead: dict[str, Sequence[int]] | None = None
    acc: float | None = None
    acc_init: float | None = None
    acc_n_images: int | None = None
    step: int | None = None
    over_budget: bool = False
    decoy_class: int | None = None
    decoy_ids: Sequence[int] | None = None


@dataclass
class Measuring:
    """How the measures are taken: the top-k size of the CLIP measures and the overlap, the
    top-k embedder (None: no CLIP measures) and the image sets' labels (push-up success)."""

    k_clip: int = 5
    embed_topk: Callable[[np.ndarray], np.ndarray] | None = None
    embedder_id: str | None = None
    val_labels: np.ndarray | None = None
    train_labels: np.ndarray | None = None


def measure_state(layers: Sequence[str], scans: StateScans, facts: StateFacts, how: Measuring) -> StateMeasure:
    """The one measuring step of an audit (SPEC §1, §3), shared by ``run_audit`` and the
    service's metrics job.

    Per layer: every §3 metric on D_τ, the top-``k_clip`` overlap on the training set (when its
    scans are given), and for a push-up the success shares on both sets, after the attack and,
    as the baseline to beat, under θ_init. Dead units (SPEC §1) are the units of the θ_init
    *training* scan that score 0 on every image; without a training scan, the attack's
    ``dead``, else the units silent on all of D_τ.
    """
    metrics = {layer: _measure_layer(layer, scans, facts, how) for layer in layers}
    overlap = {layer: metrics[layer].extra.get("train_topk_overlap_mean") for layer in layers}
    pushup = _pushup(layers, scans, facts, how, {l: list(m.attacked) for l, m in metrics.items()})
    return StateMeasure(facts.state, metrics, overlap, pushup, facts.acc, facts.acc_init, facts.acc_n_images,
                        facts.step, facts.over_budget)


def _measure_layer(layer: str, scans: StateScans, facts: StateFacts, how: Measuring) -> LayerMetrics:
    iv, fv = scans.init_val[layer], scans.final_val[layer]
    if scans.init_train is not None and layer in scans.init_train:
        dead: Sequence[int] | None = scans.init_train[layer].dead_units
    else:
        dead = (facts.dead or {}).get(layer)
    live = live_units(np.asarray(iv.scores), dead)
    attacked = facts.attacked[layer] if facts.attacked is not None and layer in facts.attacked else live
    lm = measure_layer(layer, iv.scores, fv.scores, [int(u) for u in attacked], dead=dead,
                       embed_topk=how.embed_topk, embedder_id=how.embedder_id, k_clip=how.k_clip,
                       topk_init=(iv.topk_ids, iv.topk_scores), topk_final=(fv.topk_ids, fv.topk_scores))
    train = scans.train(layer)
    if train is not None and lm.attacked:
        it, ft, k = train[0], train[1], how.k_clip
        lm.extra["train_topk_overlap_mean"] = float(np.mean(
            [len(set(it.topk_ids[u, :k]) & set(ft.topk_ids[u, :k])) / k for u in lm.attacked]))
    return lm


def _pushup(layers: Sequence[str], scans: StateScans, facts: StateFacts, how: Measuring,
            attacked: dict[str, list[int]]) -> dict | None:
    """A push-up's success shares (SPEC §8): after the attack and under θ_init, on both sets."""
    if facts.decoy_class is None:
        return None
    decoy_ids = np.asarray(facts.decoy_ids) if facts.decoy_ids is not None else None

    def pick(by_layer: dict[str, LayerScan]) -> dict[str, np.ndarray]:
        return {l: by_layer[l].topk_ids[attacked[l], :how.k_clip] for l in layers if attacked[l]}

    out = {}
    if how.val_labels is not None:
        out["val"] = pushup_report(pick(scans.final_val), how.val_labels, facts.decoy_class, None)
        out["val_init"] = pushup_report(pick(scans.init_val), how.val_labels, facts.decoy_class, None)
    if how.train_labels is not None and scans.init_train is not None and scans.final_train is not None:
        out["train"] = pushup_report(pick(scans.final_train), how.train_labels, facts.decoy_class, decoy_ids)
        out["train_init"] = pushup_report(pick(scans.init_train), how.train_labels, facts.decoy_class, decoy_ids)
    return out


@dataclass
class AuditResult:
    name: str
    attack: AttackResult
    metrics: dict[str, LayerMetrics]             # the selected state's (as before)
    table_row: TableRow                          # the selected state's row over all attacked layers
    timings: dict[str, float]
    pushup: dict | None = None
    scans: dict[str, dict[str, LayerScan]] = field(default_factory=dict)
    states: dict[str, StateMeasure] = field(default_factory=dict)   # "selected", "final"
    control: "AuditResult | None" = None

    def rows(self) -> list[TableRow]:
        """Table 3.1 rows: the control's (when there is one), the selected state's, the final state's."""
        out: list[TableRow] = []
        if self.control is not None:
            out += [dataclasses.replace(r, state="control") for r in self.control.states["selected"].rows(self.control.name)]
        for st in ("selected", "final"):
            if st in self.states:
                rows = self.states[st].rows(f"{self.name} ({st})" if st == "final" else self.name)
                if st == "selected":   # the audit's time (scans, attack, metrics) on its selected rows
                    rows = [dataclasses.replace(r, seconds=sum(self.timings.values())) for r in rows]
                out += rows
        return out


class _Clock:
    """Each audit stage's seconds (a stage run twice adds up), announced to the reporter."""

    def __init__(self, reporter: Reporter):
        self.reporter, self.timings = reporter, {}

    def __call__(self, stage: str, fn):
        self.reporter.stage(stage)
        t = time.perf_counter()
        result = fn()
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t
        return result


def run_audit(
    name: str,
    model: LoadedModel,
    train_set: ImageSet,
    val_set: ImageSet,
    cfg: AttackConfig,
    out_dir: Path | str,
    embed_topk: Callable[[np.ndarray], np.ndarray] | None = None,
    embedder_id: str | None = None,
    k_clip: int = 5,
    reporter: Reporter | None = None,
    init_train: ScanResult | None = None,
    init_val: ScanResult | None = None,
    control: "AuditResult | None" = None,
) -> AuditResult:
    """Attack ``model`` per ``cfg`` and measure both the selected and the final state on
    ``val_set`` (D_τ, where the accuracy budget is decided: SPEC §2).

    ``init_train`` / ``init_val`` are θ_init scans to reuse across several attacks of
    the same model (the demo runs four). ``control``: the α = 0 run with the same settings
    (SPEC §2 "Baseline"), whose row is reported next to this one.
    """
    reporter = reporter or NullReporter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.validate()
    layers = [model.layer(t.layer).name for t in cfg.targets]
    clock = _Clock(reporter)
    (out / "config.json").write_text(json.dumps({"name": name, "model": model.name, "weights": model.weights,
                                                 "train": train_set.key, "val": val_set.key, "k_clip": k_clip,
                                                 "embedder": embedder_id, "attack": cfg.to_json()}, indent=1))
    (out / "versions.json").write_text(json.dumps(versions(), indent=1))

    def scan_of(m: LoadedModel, image_set: ImageSet) -> ScanResult:
        return scan(m, image_set, layers, k=max(cfg.k, k_clip), device=cfg.device, reporter=reporter)

    if init_train is None or not set(layers) <= set(init_train.layers):
        init_train = clock("scan train θ_init", lambda: scan_of(model, train_set))
    if init_val is None or not set(layers) <= set(init_val.layers):
        init_val = clock("scan val θ_init", lambda: scan_of(model, val_set))
    write_scan(init_train, out, "train", "init")
    write_scan(init_val, out, "val", "init")
    attack = clock("attack", lambda: run_attack(model, train_set, val_set, cfg, out_dir=out, reporter=reporter,
                                                init_scans=init_train.layers))
    how = Measuring(k_clip, embed_topk, embedder_id, val_set.labels, train_set.labels)
    decoy_class = (train_set.class_index(cfg.decoy_class)
                   if ATTACK_KINDS[cfg.kind].decoy and cfg.decoy_class is not None else None)
    scans = {"train_init": init_train.layers, "val_init": init_val.layers}
    states: dict[str, StateMeasure] = {}
    for st, m, acc, step in (("selected", attack.selected_model, attack.acc_selected, attack.selected_step),
                             ("final", attack.final_model, attack.acc_final, attack.steps)):
        if st == "final" and attack.selected_step == attack.steps:     # the final state is the selected one
            ft, fv = scans["train_selected"], scans["val_selected"]
        else:
            ft, fv = (_scan_state(clock, scan_of, m, s, out, split, st)
                      for s, split in ((train_set, "train"), (val_set, "val")))
        scans[f"train_{st}"], scans[f"val_{st}"] = ft, fv
        facts = StateFacts(st, attack.attacked, attack.dead, acc, attack.acc_init, attack.acc_n_images, step,
                           st == "final" and attack.final_over_budget, decoy_class, attack.decoy_ids)
        states[st] = clock("metrics", lambda: measure_state(
            layers, StateScans(init_val.layers, fv, init_train.layers, ft), facts, how))
    sel = states["selected"]
    row = sel.rows(name)[-1]
    row.name = name
    row.seconds = sum(clock.timings.values())
    result = AuditResult(name, attack, sel.metrics, row, clock.timings, sel.pushup, scans, states, control)
    _write_results(out, result)
    return result


def _scan_state(clock: _Clock, scan_of, model: LoadedModel, image_set: ImageSet, out: Path, split: str,
                state: str) -> dict[str, LayerScan]:
    result = clock(f"scan {split} θ_{state}", lambda: scan_of(model, image_set))
    write_scan(result, out, split, state)
    return result.layers


def _write_results(out: Path, result: AuditResult) -> None:
    """The run directory's results: each state's per-layer metrics, attack.json (the attack's
    summary with timings, rows and aggregates), the α trajectory and loss history as CSV, and
    the Table 3.1 rows as text."""
    attack, states, sel = result.attack, result.states, result.states["selected"]
    for lm in sel.metrics.values():
        write_layer_metrics(lm, out)
    for lm in states["final"].metrics.values():
        write_layer_metrics(lm, out / "final")
    control = result.control
    summary = attack.summary()
    summary.update({"timings": result.timings, "pushup": sel.pushup, "table_row": asdict(result.table_row),
                    "table_rows": [asdict(r) for r in result.rows()],
                    "states": {k: v.to_json() for k, v in states.items()},
                    "control": None if control is None else {"name": control.name,
                                                             "dir": str(control.attack.final_path.parent)
                                                             if control.attack.final_path else None},
                    "aggregates": {l: m.to_json()["aggregates"] for l, m in sel.metrics.items()}})
    (out / "attack.json").write_text(json.dumps(summary, indent=1, default=str))
    with open(out / "alpha_trajectory.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "alpha_before", "alpha_after", "accuracy", "drop_pp", "within_budget", "n_images",
                    "full_accuracy", "full_drop_pp", "full_n_images"])
        for e in attack.alpha_trajectory:
            w.writerow([e.step, e.alpha_before, e.alpha_after, e.accuracy, e.drop_pp, int(e.within_budget),
                        e.n_images, e.full_accuracy, e.full_drop_pp, e.full_n_images])
    with open(out / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "l_attack", "l_maintain", "alpha"])
        for h in attack.history:
            w.writerow([h["step"], h["loss"], h["l_attack"], h["l_maintain"], h["alpha"]])
    (out / "table.txt").write_text(format_table(result.rows()) + "\n")
