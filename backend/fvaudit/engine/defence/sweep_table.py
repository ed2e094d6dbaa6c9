"""The results table of a pruning sweep (SPEC §5, thesis Tables 4.1–4.4, C–F; Figs. 4.1–4.4).

One row per grid point and attack: what was pruned (method, target rate, the resulting
weight and filter pruning rates), the fine-tuned accuracy with the number of images it
was measured on (for the unpruned point: the audited model's accuracy before the attack),
and the Table 3.1 metrics of the attack on the pruned model (its
selected state: the latest within the accuracy budget, SPEC §2). ``curves`` gives the
plotted series (fine-tuned accuracy and CLIP-δ of push-down and push-up against the
pruning rate, per method); ``to_csv`` / ``to_markdown`` / ``to_json`` the exports. The
service (``GET /sweeps/{id}/table``) and the CLI (``fvaudit sweep``, ``fvaudit prune``)
write the same tables from the same point records.

A point record (a dict, JSON-safe)::

    {"idx": 0, "label": "norm 25%", "values": {"prune.method": "norm", "prune.rate": 0.25},
     "method": "norm" | None, "rate": 0.25 | None, "layer": "relu3", "model_id": 7 | None,
     "prune": {"weight_rate", "filter_rate", "finetuned_acc", "acc_n_images", ...} | None,
     "audits": {"push_down": {"run_id": 5, "status": "succeeded", "rows": [run rows]}, ...}}

``rows`` are a run's Table 3.1 rows as the metrics job stores them (``layer``, ``state``,
the metrics, ``acc``, ``delta_acc``, ``acc_n_images``). Pure Python: no torch, no DB.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable, Sequence

METRICS = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap")
#: the table's columns, in order (CSV header and JSON keys)
COLUMNS = ("point", "label", "method", "rate", "weight_rate", "filter_rate", "finetuned_acc", "finetune_n_images",
           "layer", "attack", *METRICS, "label_flip_rate", "label_decoy_rate", "acc", "delta_acc", "acc_n_images",
           "status", "run_id", "model_id")
#: markdown headers (thesis names)
HEADERS = {"point": "#", "label": "point", "method": "method", "rate": "rate", "weight_rate": "weight pruned",
           "filter_rate": "filters pruned", "finetuned_acc": "fine-tuned Acc.(%)", "finetune_n_images": "n",
           "layer": "layer", "attack": "attack", "clip_delta": "CLIP-δ", "kendall_tau": "Kendall-τ",
           "clip_w": "CLIP-W", "kendall_tau_w": "Kendall-τ-W", "topk_overlap": "top-k overlap",
           "label_flip_rate": "relabelled", "label_decoy_rate": "labelled decoy",
           "acc": "Acc.(%)", "delta_acc": "ΔAcc.(pp)", "acc_n_images": "n", "status": "status", "run_id": "run",
           "model_id": "model"}
RATES = ("rate", "weight_rate", "filter_rate")


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def selected_row(rows: Sequence[dict] | None, layer: str | None) -> dict | None:
    """The attack's selected-state row of ``layer`` (else its pooled ``all`` row, else the first selected)."""
    sel = [r for r in rows or [] if r.get("state", "selected") == "selected"]
    for want in (layer, "all"):
        hit = next((r for r in sel if want is not None and r.get("layer") == want), None)
        if hit is not None:
            return hit
    return sel[0] if sel else None


def _acc_before(audits: Iterable[dict], layer: str | None) -> tuple[float | None, int | None]:
    """θ_init accuracy of an attack (its row's Acc − ΔAcc), on the image count of that row."""
    for a in audits:
        r = selected_row(a.get("rows"), layer) or {}
        acc, d = _num(r.get("acc")), _num(r.get("delta_acc"))
        if acc is not None and d is not None:
            return round(acc - d, 6), r.get("acc_n_images")
    return None, None


def table_rows(points: Iterable[dict]) -> list[dict]:
    """One row per point and attack (a point without audits yet still gets one row, attack None)."""
    out: list[dict] = []
    for p in points:
        prune = p.get("prune") or {}
        base = {"point": p.get("idx"), "label": p.get("label"), "method": p.get("method"),
                "rate": _num(p.get("rate")), "weight_rate": _num(prune.get("weight_rate")),
                "filter_rate": _num(prune.get("filter_rate")), "finetuned_acc": _num(prune.get("finetuned_acc")),
                "finetune_n_images": prune.get("acc_n_images"), "layer": p.get("layer"),
                "model_id": p.get("model_id")}
        audits = p.get("audits") or {}
        if base["finetuned_acc"] is None:       # unpruned: the audited model's accuracy before the attack
            base["finetuned_acc"], base["finetune_n_images"] = _acc_before(audits.values(), p.get("layer"))
        if not audits:
            out.append({c: base.get(c) for c in COLUMNS})
            continue
        for attack, a in audits.items():
            r = selected_row(a.get("rows"), p.get("layer")) or {}
            row = {**base, "attack": attack, "status": a.get("status"), "run_id": a.get("run_id"),
                   **{m: _num(r.get(m)) for m in METRICS},
                   # issue 22: the share of attacked units an interpreter would now call something else
                   "label_flip_rate": _num(r.get("label_flip_rate")), "label_decoy_rate": _num(r.get("label_decoy_rate")),
                   "acc": _num(r.get("acc")),
                   "delta_acc": _num(r.get("delta_acc")), "acc_n_images": r.get("acc_n_images")}
            out.append({c: row.get(c) for c in COLUMNS})
    return out


def curves(rows: Sequence[dict]) -> dict[str, dict[str, list]]:
    """Figs. 4.1–4.4: per method, the points sorted by rate with fine-tuned accuracy and the
    CLIP-δ of each attack (None where missing). The unpruned point (method None, rate 0) is
    the first point of every method's curve, so each curve starts at the unpruned model."""
    by_point: dict[Any, dict] = {}
    for r in rows:
        p = by_point.setdefault(r["point"], {"method": r["method"], "rate": r["rate"], "acc": r["finetuned_acc"],
                                             "runs": {}, "clip_delta": {}, "label": r["label"]})
        if r.get("attack"):
            p["clip_delta"][r["attack"]] = r["clip_delta"]
            p["runs"][r["attack"]] = r["run_id"]
    base = [p for p in by_point.values() if p["method"] is None]
    methods = sorted({p["method"] for p in by_point.values() if p["method"] is not None})
    attacks = sorted({r["attack"] for r in rows if r.get("attack")})
    out: dict[str, dict[str, list]] = {}
    for m in methods:
        pts = sorted((p for p in by_point.values() if p["method"] == m), key=lambda p: (p["rate"] is None, p["rate"]))
        if base:
            pts = [{**base[0], "rate": 0.0}] + pts
        s: dict[str, list] = {"rate": [p["rate"] for p in pts], "label": [p["label"] for p in pts],
                              "finetuned_acc": [p["acc"] for p in pts]}
        for a in attacks:
            s[f"clip_delta_{a}"] = [p["clip_delta"].get(a) for p in pts]
            s[f"run_{a}"] = [p["runs"].get(a) for p in pts]
        out[m] = s
    return out


def _fmt(col: str, v: Any) -> str:
    if v is None:
        return "—"
    if col in RATES or col in ("label_flip_rate", "label_decoy_rate"):
        return f"{100 * v:.1f}%"
    if col in ("finetuned_acc", "acc"):
        return f"{v:.2f}"
    if col == "delta_acc":
        return f"{v:+.2f}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def to_markdown(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A markdown table (rates in %, accuracies in %, ΔAcc in pp, metrics to 3 decimals)."""
    cols = list(columns or [c for c in COLUMNS if c not in ("point", "model_id")])
    lines = ["| " + " | ".join(HEADERS[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c, r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def to_csv(rows: Sequence[dict]) -> str:
    """CSV with the :data:`COLUMNS` header; numbers unrounded, missing values empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in COLUMNS])
    return buf.getvalue()


def to_json(rows: Sequence[dict], points: Sequence[dict] | None = None) -> str:
    return json.dumps({"columns": list(COLUMNS), "rows": list(rows), "curves": curves(rows),
                       **({"points": list(points)} if points is not None else {})}, indent=1)
