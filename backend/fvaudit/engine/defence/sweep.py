"""A pruning sweep run directly on the engine (no server): ``fvaudit sweep`` / ``fvaudit prune``.

The same experiment as the service's ``sweep`` job (SPEC §5, thesis Chapter 4), in one
process: the unpruned model is point 0 (its push-down's per-unit CLIP-δ ranks the channels
of vulnerability pruning), then for each method and rate: prune a copy of the model, fine-tune
it with the pruned weights held at zero (:func:`fvaudit.engine.defence.pruning.finetune`), measure its
accuracy on the full validation set, and audit it by push-down and push-up
(:func:`fvaudit.engine.audit.run_audit`, which scans θ_init of the pruned model itself).

Each point writes ``<out>/<NN>-<label>/point.json`` when done; a rerun skips the points
already there (resumable), and the tables (``sweep.csv``, ``sweep.json``, ``sweep.md``,
:mod:`fvaudit.engine.defence.sweep_table`) are rewritten after every point.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fvaudit.engine.defence import pruning as P
from fvaudit.engine.defence import sweep_table as T
from fvaudit.engine.defence.sweep_plot import curves_svg
from fvaudit.engine.attack.run import AttackConfig, Target, evaluate_accuracy
from fvaudit.engine.data.images import ImageSet
from fvaudit.engine.models.loading import LoadedModel, clone_model, save_checkpoint
from fvaudit.engine.progress import NullReporter, Reporter

METHODS = ("norm", "oto_filter", "oto_weight", "vulnerability")
LABELS = {"norm": "norm", "oto_filter": "OTO filter", "oto_weight": "OTO weight", "vulnerability": "vulnerability"}


@dataclass
class PruneSettings:
    """How every point is pruned and fine-tuned (the thesis' schedule, scaled: recorded)."""

    finetune_steps: int = 200
    lr: float = 1e-4
    lr_drop: float = 0.1
    batch_size: int = 64
    oto_steps: int = 200
    seed: int = 0

    def phases(self) -> list[tuple[int, float]]:
        return finetune_phases(self.finetune_steps, self.lr, self.lr_drop)


def finetune_phases(steps: int, lr: float, lr_drop: float) -> list[tuple[int, float]]:
    """The thesis' fine-tune schedule scaled to ``steps``: two equal phases, the second at
    lr · lr_drop (thesis: 10 epochs at 1e-5, then 10 at 1e-6); empty phases dropped."""
    first = (steps + 1) // 2
    return [(s, r) for s, r in ((first, lr), (steps - first, float(f"{lr * lr_drop:.6g}"))) if s > 0]


@dataclass
class SweepPlan:
    layer: str
    methods: Sequence[str]
    rates: Sequence[float]
    attacks: Sequence[str] = ("push_down", "push_up")
    decoy_class: str | int | None = None
    attack: dict = field(default_factory=dict)           # AttackConfig fields shared by every attack
    prune: PruneSettings = field(default_factory=PruneSettings)
    k_clip: int = 5

    def points(self) -> list[tuple[str | None, float | None]]:
        return [(None, None)] + [(m, r) for m in self.methods for r in self.rates]


def label(method: str | None, rate: float | None) -> str:
    return "unpruned" if method is None else f"{LABELS[method]} {100 * rate:g}%"


def top_channels(clip_delta: dict[int, float | None], units: int, n: int) -> list[int]:
    """The ``n`` channels with the highest CLIP-δ (ties: lower index; unmeasured ones last)."""
    ranked = sorted(range(units), key=lambda u: (clip_delta.get(u) is None, -(clip_delta.get(u) or 0.0), u))
    return sorted(ranked[:n])


def prune_point(model: LoadedModel, method: str, rate: float, layer: str, train: ImageSet, settings: PruneSettings,
                clip_delta: dict[int, float | None] | None = None, device: str = "cpu",
                reporter: Reporter | None = None) -> tuple[LoadedModel, P.PruneReport, list[int] | None]:
    """A pruned copy of ``model`` (not fine-tuned yet), its report and the removed channels."""
    pm = clone_model(model)
    channels = None
    if method == "norm":
        report = P.norm_prune(pm, rate)
    elif method in ("oto_filter", "oto_weight"):
        report = P.oto_prune(pm, train, rate, mode=method.split("_")[1], steps=settings.oto_steps, lr=settings.lr,
                             batch_size=settings.batch_size, seed=settings.seed, device=device, reporter=reporter)
    elif method == "vulnerability":
        if clip_delta is None:
            raise P.PruneError(f"vulnerability pruning of {layer} needs the per-unit CLIP-δ of a push-down run")
        units = pm.layer(layer).units
        channels = top_channels(clip_delta, units, int(np.floor(rate * units + 0.5)))
        report = P.vulnerability_prune(pm, layer, channels)
    else:
        raise P.PruneError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")
    return pm, report, channels


def prune_record(method: str, rate: float, report: P.PruneReport, channels, settings: PruneSettings, n_train: int,
                 accs: dict[str, float], n_val: int, history: list[dict]) -> dict:
    return {"method": method, "rate": rate, "weight_rate": report.weight_rate, "filter_rate": report.filter_rate,
            "report": report.to_json(), "channels": channels,
            "finetune": {"phases": [list(p) for p in settings.phases()], "steps": settings.finetune_steps,
                         "batch_size": settings.batch_size, "train_images": n_train, "seed": settings.seed,
                         "optimizer": "Adam", "loss": "cross-entropy on the labels",
                         "final_loss": history[-1]["loss"] if history else None},
            **accs, "acc_n_images": n_val}


def _row_json(r) -> dict:
    return {"layer": r.layer, "state": r.state, "step": r.step, **r.values, "acc": r.acc, "delta_acc": r.delta_acc,
            "acc_n_images": r.acc_n_images, "over_budget": r.over_budget}


def run_prune_sweep(model: LoadedModel, train: ImageSet, finetune_set: ImageSet, val: ImageSet, plan: SweepPlan,
                    out: Path, embed_topk: Callable | None = None, embedder_id: str | None = None,
                    reporter: Reporter | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) every point of ``plan``; returns the point records (sweep_table's input)."""
    from fvaudit.engine.audit import run_audit

    reporter = reporter or NullReporter()
    out.mkdir(parents=True, exist_ok=True)
    layer = model.layer(plan.layer).name
    settings = json.loads(json.dumps({"model": model.name, "weights": model.weights, "train": train.key,
                                      "finetune_set": finetune_set.key, "val": val.key, "plan": asdict(plan)},
                                     default=str))
    saved = out / "plan.json"
    if saved.exists() and json.loads(saved.read_text()) != settings:
        raise ValueError(f"--out: {out} holds a sweep with other settings ({saved}); resume it with the same "
                         "settings or use another directory")
    saved.write_text(json.dumps(settings, indent=1))
    val_ids = np.arange(len(val))
    records: list[dict] = []
    baseline_delta: dict[int, float | None] | None = None
    for idx, (method, rate) in enumerate(plan.points()):
        name = label(method, rate)
        pdir = out / f"{idx:02d}-{re.sub(r'[^A-Za-z0-9.]+', '_', name).strip('_')}"
        done = pdir / "point.json"
        if done.exists():
            rec = json.loads(done.read_text())
            log(f"[{idx}] {name}: done before, kept ({done})")
        else:
            t0 = time.perf_counter()
            pdir.mkdir(parents=True, exist_ok=True)
            prune = None
            pm = model
            if method is not None:
                reporter.stage(f"[{idx}] prune: {name}")
                acc_parent = evaluate_accuracy(model, val, val_ids, device=plan.attack.get("device", "cpu"))
                pm, report, channels = prune_point(model, method, rate, layer, finetune_set, plan.prune, baseline_delta,
                                                   plan.attack.get("device", "cpu"), reporter)
                acc_pruned = evaluate_accuracy(pm, val, val_ids, device=plan.attack.get("device", "cpu"))
                s = plan.prune
                history = P.finetune(pm, finetune_set, s.phases(), batch_size=s.batch_size, seed=s.seed,
                                     device=plan.attack.get("device", "cpu"), reporter=reporter) if s.phases() else []
                acc_ft = evaluate_accuracy(pm, val, val_ids, device=plan.attack.get("device", "cpu"))
                prune = prune_record(method, rate, report, channels, s, len(finetune_set),
                                     {"parent_acc": acc_parent, "pruned_acc": acc_pruned, "finetuned_acc": acc_ft},
                                     len(val_ids), history)
                save_checkpoint(pm.module, pdir / "pruned.safetensors", {"prune_method": method})
                log(f"[{idx}] {name}: weights pruned {100 * report.weight_rate:.1f}%, filters "
                    f"{100 * report.filter_rate:.1f}%; accuracy {acc_parent:.2f} → {acc_pruned:.2f} → "
                    f"{acc_ft:.2f} after fine-tuning ({len(val_ids)} images)")
            audits = {}
            for a in plan.attacks:
                extra = {"decoy_class": plan.decoy_class} if a == "push_up" else {}
                cfg = AttackConfig(kind=a, targets=[Target(layer)], **extra, **plan.attack)
                res = run_audit(f"{name} {a}", pm, train, val, cfg, pdir / a, embed_topk=embed_topk,
                                embedder_id=embedder_id, k_clip=plan.k_clip, reporter=reporter)
                audits[a] = {"run_id": None, "status": "succeeded", "dir": str(pdir / a),
                             "rows": [_row_json(r) for r in res.rows()]}
                if method is None and a == "push_down":
                    lm = res.states["selected"].metrics[layer]
                    audits[a]["clip_delta_per_unit"] = {str(u): v for u, v in lm.per_unit.get("clip_delta", {}).items()}
            rec = {"idx": idx, "label": name, "values": {"prune.method": method, "prune.rate": rate},
                   "method": method, "rate": rate, "layer": layer, "model_id": None, "prune": prune,
                   "audits": audits, "seconds": time.perf_counter() - t0}
            done.write_text(json.dumps(rec, indent=1, default=float))
            log(f"[{idx}] {name}: done in {rec['seconds']:.0f} s")
        if method is None and "push_down" in rec["audits"]:
            per_unit = rec["audits"]["push_down"].get("clip_delta_per_unit") or {}
            baseline_delta = {int(u): v for u, v in per_unit.items()} if any(
                v is not None for v in per_unit.values()) else None       # no embedder: nothing to rank by
        records.append(rec)
        write_tables(records, out)
    return records


def write_tables(records: list[dict], out: Path) -> list[dict]:
    rows = T.table_rows(records)
    (out / "sweep.csv").write_text(T.to_csv(rows))
    (out / "sweep.md").write_text(T.to_markdown(rows) + "\n")
    (out / "sweep_curves.svg").write_text(curves_svg(T.curves(rows)))   # Figs. 4.1–4.4
    (out / "sweep.json").write_text(T.to_json(rows, [{k: v for k, v in r.items() if k != "audits"}
                                                    for r in records]))
    return rows
