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
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fvaudit.engine.activations import LayerScan, ScanResult, scan
from fvaudit.engine.attacks import AttackConfig, AttackResult, run_attack
from fvaudit.engine.images import ImageSet
from fvaudit.engine.models import LoadedModel
from fvaudit.engine.progress import NullReporter, Reporter
from fvaudit.engine.report import (LayerMetrics, TableRow, format_table, measure_layer, pushup_report,
                                   table_rows_from_metrics, write_layer_metrics)


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
class AuditResult:
    name: str
    attack: AttackResult
    metrics: dict[str, LayerMetrics]
    table_row: TableRow
    timings: dict[str, float]
    pushup: dict | None = None
    scans: dict[str, dict[str, LayerScan]] = field(default_factory=dict)


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
) -> AuditResult:
    """Attack ``model`` per ``cfg`` and measure the attack on ``val_set`` (D_τ).

    ``init_train`` / ``init_val`` are θ_init scans to reuse across several attacks of
    the same model (the demo runs four).
    """
    reporter = reporter or NullReporter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.validate()
    layers = [model.layer(t.layer).name for t in cfg.targets]
    k_scan = max(cfg.k, k_clip)
    timings: dict[str, float] = {}
    (out / "config.json").write_text(json.dumps({"name": name, "model": model.name, "weights": model.weights,
                                                 "train": train_set.key, "val": val_set.key, "k_clip": k_clip,
                                                 "embedder": embedder_id, "attack": cfg.to_json()}, indent=1))
    (out / "versions.json").write_text(json.dumps(versions(), indent=1))

    def timed(stage: str, fn):
        reporter.stage(stage)
        t = time.perf_counter()
        r = fn()
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t
        return r

    if init_train is None or not set(layers) <= set(init_train.layers):
        init_train = timed("scan train θ_init", lambda: scan(model, train_set, layers, k=k_scan, device=cfg.device, reporter=reporter))
    if init_val is None or not set(layers) <= set(init_val.layers):
        init_val = timed("scan val θ_init", lambda: scan(model, val_set, layers, k=k_scan, device=cfg.device, reporter=reporter))
    write_scan(init_train, out, "train", "init")
    write_scan(init_val, out, "val", "init")
    attack = timed("attack", lambda: run_attack(model, train_set, val_set, cfg, out_dir=out, reporter=reporter,
                                                init_scans=init_train.layers))
    final = attack.selected_model
    final_train = timed("scan train θ_final", lambda: scan(final, train_set, layers, k=k_scan, device=cfg.device, reporter=reporter))
    final_val = timed("scan val θ_final", lambda: scan(final, val_set, layers, k=k_scan, device=cfg.device, reporter=reporter))
    write_scan(final_train, out, "train", "final")
    write_scan(final_val, out, "val", "final")

    def measure_all() -> dict[str, LayerMetrics]:
        res = {}
        for layer in layers:
            iv, fv = init_val.layers[layer], final_val.layers[layer]
            lm = measure_layer(layer, iv.scores, fv.scores, attack.attacked[layer], dead=init_train.layers[layer].dead_units,
                embed_topk=embed_topk, embedder_id=embedder_id, k_clip=k_clip,
                topk_init=(iv.topk_ids, iv.topk_scores), topk_final=(fv.topk_ids, fv.topk_scores))
            it, ft = init_train.layers[layer], final_train.layers[layer]
            att = attack.attacked[layer]
            lm.extra["train_topk_overlap_mean"] = float(np.mean([
                len(set(it.topk_ids[u, :k_clip]) & set(ft.topk_ids[u, :k_clip])) / k_clip for u in att]))
            write_layer_metrics(lm, out)
            res[layer] = lm
        return res

    metrics = timed("metrics", measure_all)
    pushup = None
    if cfg.kind == "push_up":
        decoy_class = train_set.class_index(cfg.decoy_class) if cfg.decoy_class is not None else None
        if decoy_class is not None:
            decoy_ids = np.asarray(attack.decoy_ids) if attack.decoy_ids else None
            pushup = {
                "train": pushup_report({l: final_train.layers[l].topk_ids[attack.attacked[l], :k_clip] for l in layers},
                                       train_set.labels, decoy_class, decoy_ids),
                "val": pushup_report({l: final_val.layers[l].topk_ids[attack.attacked[l], :k_clip] for l in layers},
                                     val_set.labels, decoy_class, None),
                # the same shares under θ_init: what the attack has to beat
                "train_init": pushup_report({l: init_train.layers[l].topk_ids[attack.attacked[l], :k_clip] for l in layers},
                                            train_set.labels, decoy_class, decoy_ids),
                "val_init": pushup_report({l: init_val.layers[l].topk_ids[attack.attacked[l], :k_clip] for l in layers},
                                          val_set.labels, decoy_class, None),
            }
    # one Table 3.1 row: mean over all attacked units of all attacked layers
    row = _combined_row(name, metrics, attack)
    row.seconds = sum(timings.values())
    summary = attack.summary()
    summary.update({"timings": timings, "pushup": pushup, "table_row": asdict(row),
                    "aggregates": {l: m.to_json()["aggregates"] for l, m in metrics.items()}})
    (out / "attack.json").write_text(json.dumps(summary, indent=1, default=str))
    with open(out / "alpha_trajectory.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "alpha_before", "alpha_after", "accuracy", "drop_pp", "within_budget"])
        for e in attack.alpha_trajectory:
            w.writerow([e.step, e.alpha_before, e.alpha_after, e.accuracy, e.drop_pp, int(e.within_budget)])
    with open(out / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "l_attack", "l_maintain", "alpha"])
        for h in attack.history:
            w.writerow([h["step"], h["loss"], h["l_attack"], h["l_maintain"], h["alpha"]])
    (out / "table.txt").write_text(format_table([row]) + "\n")
    return AuditResult(name, attack, metrics, row, timings, pushup,
                       {"train_init": init_train.layers, "val_init": init_val.layers,
                        "train_final": final_train.layers, "val_final": final_val.layers})


def _combined_row(name: str, metrics: dict[str, LayerMetrics], attack: AttackResult) -> TableRow:
    vals: dict[str, float | None] = {}
    for m in ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"):
        xs = [v for lm in metrics.values() for u, v in lm.per_unit.get(m, {}).items()
              if u in set(lm.attacked) and v is not None and np.isfinite(v)]
        vals[m] = float(np.mean(xs)) if xs else None
    return TableRow(name, vals, attack.acc_selected, attack.acc_selected - attack.acc_init)
