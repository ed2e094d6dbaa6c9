"""The sweep results table (engine/defence/sweep_table.py): rows, curves and exports, by hand-checkable values."""
from __future__ import annotations

import csv
import io
import json

from fvaudit.engine.defence.sweep_table import COLUMNS, curves, selected_row, table_rows, to_csv, to_json, to_markdown


def _rows(cd: float, acc: float, d: float, layer: str = "relu3") -> list[dict]:
    return [{"layer": layer, "state": "selected", "clip_delta": cd, "kendall_tau": 0.5, "clip_w": 0.9,
             "kendall_tau_w": 0.1, "topk_overlap": 0.2, "acc": acc, "delta_acc": d, "acc_n_images": 400,
             "label_flip_rate": cd * 2, "label_decoy_rate": None},
            {"layer": layer, "state": "final", "clip_delta": 0.99, "acc": 10.0, "delta_acc": -80.0,
             "acc_n_images": 400}]


POINTS = [
    {"idx": 0, "label": "unpruned", "values": {}, "method": None, "rate": None, "layer": "relu3", "model_id": 1,
     "prune": None, "audits": {"push_down": {"run_id": 11, "status": "succeeded", "rows": _rows(0.30, 90.0, -0.5)},
                               "push_up": {"run_id": 12, "status": "succeeded", "rows": _rows(0.20, 90.2, -0.3)}}},
    {"idx": 2, "label": "norm 50%", "values": {"prune.rate": 0.5}, "method": "norm", "rate": 0.5, "layer": "relu3",
     "model_id": 8, "prune": {"weight_rate": 0.5, "filter_rate": 0.0, "finetuned_acc": 88.0, "acc_n_images": 400},
     "audits": {"push_down": {"run_id": 15, "status": "succeeded", "rows": _rows(0.25, 87.5, -0.5)},
                "push_up": {"run_id": 16, "status": "failed", "rows": []}}},
    {"idx": 1, "label": "norm 25%", "values": {"prune.rate": 0.25}, "method": "norm", "rate": 0.25, "layer": "relu3",
     "model_id": 7, "prune": {"weight_rate": 0.25, "filter_rate": 0.0, "finetuned_acc": 89.0, "acc_n_images": 400},
     "audits": {"push_down": {"run_id": 13, "status": "succeeded", "rows": _rows(0.28, 88.7, -0.3)}}},
    {"idx": 3, "label": "vulnerability 50%", "values": {}, "method": "vulnerability", "rate": 0.5, "layer": "relu3",
     "model_id": 9, "prune": None, "audits": {}},
]


def test_selected_row_prefers_the_layer_then_all():
    rows = [{"layer": "all", "state": "selected", "clip_delta": 1.0}, {"layer": "relu3", "state": "final"},
            {"layer": "relu3", "state": "selected", "clip_delta": 2.0}]
    assert selected_row(rows, "relu3")["clip_delta"] == 2.0
    assert selected_row(rows, "relu1")["clip_delta"] == 1.0
    assert selected_row([], "relu3") is None


def test_rows_one_per_point_and_attack():
    rows = table_rows(POINTS)
    assert [(r["point"], r["attack"]) for r in rows] == [(0, "push_down"), (0, "push_up"), (2, "push_down"),
                                                         (2, "push_up"), (1, "push_down"), (3, None)]
    assert all(list(r) == list(COLUMNS) for r in rows)
    # the unpruned point's accuracy is its model's before the attack: Acc − ΔAcc of the push-down row
    assert rows[0]["finetuned_acc"] == 90.5 and rows[0]["finetune_n_images"] == 400
    assert rows[0]["clip_delta"] == 0.30 and rows[0]["run_id"] == 11 and rows[0]["method"] is None
    assert rows[2]["finetuned_acc"] == 88.0 and rows[2]["weight_rate"] == 0.5 and rows[2]["acc"] == 87.5
    assert rows[3]["status"] == "failed" and rows[3]["clip_delta"] is None and rows[3]["run_id"] == 16
    assert rows[5]["status"] is None and rows[5]["rate"] == 0.5 and rows[5]["finetuned_acc"] is None
    # issue 22: the selected state's label-flip rate (the share of attacked units relabelled) per row
    assert rows[0]["label_flip_rate"] == 0.60 and rows[2]["label_flip_rate"] == 0.50
    assert rows[0]["label_decoy_rate"] is None and rows[3]["label_flip_rate"] is None
    assert "| relabelled |" in to_markdown(rows) and "60.0%" in to_markdown(rows)


def test_curves_per_method_sorted_by_rate_from_the_unpruned_model():
    c = curves(table_rows(POINTS))
    assert sorted(c) == ["norm", "vulnerability"]
    assert c["norm"]["rate"] == [0.0, 0.25, 0.5]
    assert c["norm"]["finetuned_acc"] == [90.5, 89.0, 88.0]
    assert c["norm"]["clip_delta_push_down"] == [0.30, 0.28, 0.25]
    assert c["norm"]["clip_delta_push_up"] == [0.20, None, None]
    assert c["norm"]["run_push_down"] == [11, 13, 15]
    assert c["vulnerability"]["rate"] == [0.0, 0.5] and c["vulnerability"]["clip_delta_push_down"] == [0.30, None]


def test_exports():
    rows = table_rows(POINTS)
    parsed = list(csv.reader(io.StringIO(to_csv(rows))))
    assert parsed[0] == list(COLUMNS) and len(parsed) == 7
    r2 = dict(zip(parsed[0], parsed[3]))
    assert r2["label"] == "norm 50%" and r2["clip_delta"] == "0.25" and r2["weight_rate"] == "0.5"
    assert dict(zip(parsed[0], parsed[6]))["clip_delta"] == ""
    md = to_markdown(rows).splitlines()
    assert md[0].startswith("| point | method | rate | weight pruned |") and len(md) == 8
    assert "| norm 50% | norm | 50.0% | 50.0% | 0.0% | 88.00 | 400 | relu3 | push_down | 0.250 |" in md[4]
    doc = json.loads(to_json(rows, POINTS))
    assert doc["columns"] == list(COLUMNS) and doc["curves"]["norm"]["rate"] == [0.0, 0.25, 0.5]
    assert len(doc["points"]) == 4
