"""Measure an attack (SPEC §3) and format the thesis' Table 3.1.

Given score matrices of the same image set ``D_τ`` under θ_init and θ_final, their top-k,
and an embedder for the CLIP metrics, :func:`measure_layer` computes every per-unit
metric for the live units of a layer and aggregates them over the attacked units (NaN
skipped and counted). Whack-a-mole metrics (τ-W, CLIP-W) compare a unit against every
other live unit of its layer, attacked or not.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fvaudit.engine.measure import kendall
from fvaudit.engine import measure
from fvaudit.engine.scans.activations import topk_from_scores

METRIC_NAMES = ["clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"]
TABLE_COLUMNS = [("CLIP-δ", "clip_delta"), ("Kendall-τ", "kendall_tau"), ("CLIP-W", "clip_w"),
                 ("Kendall-τ-W", "kendall_tau_w"), ("top-k overlap", "topk_overlap")]


@dataclass
class LayerMetrics:
    layer: str
    units: list[int]                       # live units (metrics computed for each)
    attacked: list[int]                    # the attacked subset (aggregated over)
    dead: list[int]
    per_unit: dict[str, dict[int, float]]  # metric -> unit -> value
    aggregates: dict[str, dict]            # metric -> {mean, n, n_nan}
    topk_init: dict[int, list[int]]
    topk_final: dict[int, list[int]]
    nearest: dict[int, dict]               # unit -> nearest other units before/after (whack-a-mole view)
    embedder: str | None = None
    k_clip: int = 5
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "layer": self.layer, "units": self.units, "attacked": self.attacked, "dead": self.dead,
            "per_unit": {m: {str(u): _num(v) for u, v in d.items()} for m, d in self.per_unit.items()},
            "aggregates": {m: {k: _num(v) for k, v in a.items()} for m, a in self.aggregates.items()},
            "topk_init": {str(u): v for u, v in self.topk_init.items()},
            "topk_final": {str(u): v for u, v in self.topk_final.items()},
            "nearest": {str(u): v for u, v in self.nearest.items()},
            "embedder": self.embedder, "k_clip": self.k_clip, "extra": self.extra,
        }


def _num(v):
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def live_units(scores_init: np.ndarray, dead: Sequence[int] | None = None) -> list[int]:
    """Units not dead: given dead list (from the training set) or non-constant-zero on D_τ."""
    if dead is not None:
        dead_set = set(int(d) for d in dead)
        return [u for u in range(scores_init.shape[1]) if u not in dead_set]
    zero = np.nan_to_num(np.abs(np.asarray(scores_init)), nan=0).max(axis=0) == 0
    return np.flatnonzero(~zero).tolist()


def measure_layer(
    layer: str,
    scores_init: np.ndarray,
    scores_final: np.ndarray,
    attacked: Sequence[int],
    dead: Sequence[int] | None = None,
    embed_topk: Callable[[np.ndarray], np.ndarray] | None = None,
    embedder_id: str | None = None,
    k_clip: int = 5,
    topk_init: tuple[np.ndarray, np.ndarray] | None = None,
    topk_final: tuple[np.ndarray, np.ndarray] | None = None,
) -> LayerMetrics:
    """Every SPEC §3 metric for each live unit of ``layer``; aggregates over ``attacked``.

    ``dead``: the units dead on the training set under θ_init (SPEC §1); when None, the
    units scoring 0 on every image of D_τ are treated as dead.
    ``embed_topk(ids [J, k]) -> [J, k, E]`` gives image embeddings; without it the CLIP
    metrics are left out. Rows of skipped (NaN) images are dropped before ranking.
    """
    a = np.asarray(scores_init, dtype=np.float64)
    b = np.asarray(scores_final, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"scores_init {a.shape} and scores_final {b.shape} differ in shape")
    ok = ~(np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
    a, b = a[ok], b[ok]
    units = live_units(a, dead)
    dead = [u for u in range(a.shape[1]) if u not in set(units)]
    attacked = [int(u) for u in attacked if int(u) in set(units)]
    ti_ids, _ = topk_init if topk_init is not None else topk_from_scores(np.asarray(scores_init), k_clip)
    tf_ids, _ = topk_final if topk_final is not None else topk_from_scores(np.asarray(scores_final), k_clip)
    ti_ids, tf_ids = ti_ids[:, :k_clip], tf_ids[:, :k_clip]
    A, B = a[:, units], b[:, units]
    per_unit: dict[str, dict[int, float]] = {}
    per_unit["kendall_tau"] = dict(zip(units, measure.kendall_tau(A, B).tolist()))
    # τ-W and the nearest units need only each row's 3 largest τ: bound-and-prune, no matrices
    tau_cross, tau_init = kendall.kendall_w_maxima(A, B, k=3) if len(units) > 1 else (None, None)
    per_unit["kendall_tau_w"] = (dict(zip(units, kendall.tau_w_from_maxima(tau_cross, tau_init).tolist()))
                                 if len(units) > 1 else {})
    per_unit["topk_overlap"] = dict(zip(units, measure.topk_overlap(ti_ids[units], tf_ids[units]).tolist()))
    nearest: dict[int, dict] = {}
    sim_ii = sim_if = None
    if embed_topk is not None and len(units) > 1:
        e_init = embed_topk(ti_ids[units])
        e_final = embed_topk(tf_ids[units])
        per_unit["clip_delta"] = dict(zip(units, measure.clip_delta(e_init, e_final).tolist()))
        per_unit["clip_w"] = dict(zip(units, measure.clip_w(e_init, e_final).tolist()))
        sim_ii = measure.set_similarity(e_init, e_init)
        sim_if = measure.set_similarity(e_init, e_final)
    for c, u in enumerate(units):
        nearest[u] = _nearest(c, units, tau_init, tau_cross, sim_ii, sim_if)
    aggregates = {m: measure.nan_aggregate(np.array([per_unit[m][u] for u in attacked if u in per_unit[m]], dtype=float))
                  for m in per_unit}
    return LayerMetrics(
        layer, units, attacked, sorted(int(d) for d in dead), per_unit, aggregates,
        {u: ti_ids[u].tolist() for u in units}, {u: tf_ids[u].tolist() for u in units}, nearest,
        embedder_id, k_clip, {"n_images": int(ok.sum()), "n_skipped_rows": int((~ok).sum())},
    )


def _nearest(c: int, units: list[int], tau_init, tau_cross, sim_ii, sim_if, n: int = 3) -> dict:
    """The other units closest to unit ``units[c]`` before and after (thesis Figs. 3.4, 3.6).
    ``tau_init`` / ``tau_cross``: the rows' largest τ (``kendall_w.RowTop``, k ≥ n) or None."""
    def top_tau(rows) -> list[dict]:
        if rows is None:
            return []
        return [{"unit": units[int(i)], "value": _num(float(v))}
                for i, v in zip(rows.index[c, :n], rows.value[c, :n]) if i >= 0]

    def top(row: np.ndarray) -> list[dict]:
        row = row.astype(float).copy()
        row[c] = -np.inf
        row = np.where(np.isnan(row), -np.inf, row)
        order = np.argsort(-row, kind="stable")[:n]
        return [{"unit": units[i], "value": _num(row[i])} for i in order if np.isfinite(row[i])]

    out = {"by_tau_init": top_tau(tau_init), "by_tau_final": top_tau(tau_cross)}
    if sim_ii is not None:
        out["by_clip_init"] = top(sim_ii[c])
        out["by_clip_final"] = top(sim_if[c])
    return out


def pushup_report(topk_final: dict[str, np.ndarray], labels: np.ndarray, decoy_class: int,
                  decoy_ids: np.ndarray | None) -> dict:
    """Push-up success on one image set (SPEC §3)."""
    return {name: measure.pushup_success(ids, labels, decoy_class, decoy_ids) for name, ids in topk_final.items()}


# ---------------------------------------------------------------- Table 3.1

@dataclass
class TableRow:
    name: str
    values: dict[str, float | None]     # metric -> mean over attacked units
    acc: float | None                   # top-1 % on the full validation set
    delta_acc: float | None
    seconds: float | None = None
    note: str = ""
    state: str = "selected"             # "selected" | "final" | "control" (SPEC §2)
    step: int | None = None             # the attack step this state is from
    acc_n_images: int | None = None     # images the accuracy was measured on
    over_budget: bool = False           # the drop exceeds the budget (a final state, reported anyway)
    layer: str | None = None            # a layer name, or "all"

    @classmethod
    def from_json(cls, d: dict) -> "TableRow":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> dict:
        """The row as a run stores it and the sweep tables read it: layer, state, step, each
        metric's mean flattened in, accuracy, ΔAcc, its image count and the budget flag."""
        return {"layer": self.layer, "state": self.state, "step": self.step, **self.values, "acc": self.acc,
                "delta_acc": self.delta_acc, "acc_n_images": self.acc_n_images, "over_budget": self.over_budget}



def format_table(rows: Sequence[TableRow]) -> str:
    """Plain-text Table 3.1: mean over attacked units, accuracy and ΔAcc in pp, with the state
    each row measures, its step, and the number of images its accuracy was measured on."""
    head = ["Layer/Attack", "state", "step"] + [c for c, _ in TABLE_COLUMNS] + ["Acc.(%)", "ΔAcc.(pp)", "n", "time (s)"]
    body = []
    for r in rows:
        state = r.state + (" OVER" if r.over_budget else "")
        cells = [r.name, state, "—" if r.step is None else str(r.step)] + [_fmt(r.values.get(k)) for _, k in TABLE_COLUMNS]
        cells += [_fmt(r.acc, 2), _fmt(r.delta_acc, 2, signed=True),
                  "—" if r.acc_n_images is None else str(r.acc_n_images), _fmt(r.seconds, 1)]
        body.append(cells)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cs: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cs, widths)))
    sep = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(head), sep] + [line(b) for b in body])


def _fmt(v, nd: int = 3, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.{nd}f}" if signed else f"{v:.{nd}f}"


def write_layer_metrics(lm: LayerMetrics, out_dir: Path) -> None:
    """metrics_<layer>.json (everything) and .csv (one row per live unit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = lm.layer.replace("/", "_")
    (out_dir / f"metrics_{safe}.json").write_text(json.dumps(lm.to_json(), indent=1))
    with open(out_dir / f"metrics_{safe}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        names = [m for m in METRIC_NAMES if m in lm.per_unit]
        w.writerow(["layer", "unit", "attacked"] + names + ["topk_init", "topk_final"])
        att = set(lm.attacked)
        for u in lm.units:
            w.writerow([lm.layer, u, int(u in att)] + [_num(lm.per_unit[m].get(u)) for m in names]
                       + [" ".join(map(str, lm.topk_init[u])), " ".join(map(str, lm.topk_final[u]))])
