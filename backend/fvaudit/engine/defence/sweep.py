"""A pruning sweep run directly on the engine (no server): ``fvaudit sweep`` / ``fvaudit prune``.

The same experiment as the service's ``sweep`` job (SPEC §5, thesis Chapter 4), in one
process: the unpruned model is point 0 (its push-down's per-unit CLIP-δ ranks the channels
of vulnerability pruning), then for each method and rate: prune a copy of the model, fine-tune
it with the pruned weights held at zero (:func:`fvaudit.engine.defence.finetune.finetune`), measure its
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


from fvaudit.engine.attack.config import AttackConfig, Target
from fvaudit.engine.data.images import ImageSet
from fvaudit.engine.defence import sweep_table
from fvaudit.engine.defence.defaults import label
from fvaudit.engine.defence.prune import FinetuneSettings, prune, summary
from fvaudit.engine.defence.sweep_plot import curves_svg
from fvaudit.engine.models.checkpoints import save_checkpoint
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.progress import NullReporter, Reporter


@dataclass
class SweepPlan:
    layer: str
    methods: Sequence[str]
    rates: Sequence[float]
    attacks: Sequence[str] = ("push_down", "push_up")
    decoy_class: str | int | None = None
    attack: dict = field(default_factory=dict)           # AttackConfig fields shared by every attack
    prune: FinetuneSettings = field(default_factory=FinetuneSettings)
    k_clip: int = 5

    def points(self) -> list[tuple[str | None, float | None]]:
        return [(None, None)] + [(m, r) for m in self.methods for r in self.rates]


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
            record = None
            pm = model
            if method is not None:
                done_prune = prune(model, method, rate, finetune_set, val, layer=layer, clip_delta=baseline_delta,
                                   settings=plan.prune, device=plan.attack.get("device", "cpu"), reporter=reporter)
                pm, record = done_prune.model, done_prune.record
                save_checkpoint(pm.module, pdir / "pruned.safetensors", {"prune_method": method})
                log(f"[{idx}] " + summary(record, name))
            audits = {}
            for a in plan.attacks:
                extra = {"decoy_class": plan.decoy_class} if a == "push_up" else {}
                cfg = AttackConfig(kind=a, targets=[Target(layer)], **extra, **plan.attack)
                res = run_audit(f"{name} {a}", pm, train, val, cfg, pdir / a, embed_topk=embed_topk,
                                embedder_id=embedder_id, k_clip=plan.k_clip, reporter=reporter)
                audits[a] = {"run_id": None, "status": "succeeded", "dir": str(pdir / a),
                             "rows": [r.to_json() for r in res.rows()]}
                if method is None and a == "push_down":
                    lm = res.states["selected"].metrics[layer]
                    audits[a]["clip_delta_per_unit"] = {str(u): v for u, v in lm.per_unit.get("clip_delta", {}).items()}
            rec = {"idx": idx, "label": name, "values": {"prune.method": method, "prune.rate": rate},
                   "method": method, "rate": rate, "layer": layer, "model_id": None, "prune": record,
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
    rows = sweep_table.table_rows(records)
    (out / "sweep.csv").write_text(sweep_table.to_csv(rows))
    (out / "sweep.md").write_text(sweep_table.to_markdown(rows) + "\n")
    (out / "sweep_curves.svg").write_text(curves_svg(sweep_table.curves(rows)))   # Figs. 4.1–4.4
    (out / "sweep.json").write_text(sweep_table.to_json(rows, [{k: v for k, v in r.items() if k != "audits"}
                                                    for r in records]))
    return rows
