"""Writes the contract-shaped fixtures of the dashboard's component tests (issues 12, 14).

The numbers are small and hand-checkable on purpose (the tests assert them exactly);
the shapes are the API contract's: run detail `rows`, `control_run_id`, `synthetic`,
α events with `n_images` / `full_*`, the unit detail's `synthetic`, the model browse,
and a 9-step audit chain whose children carry `step_key` and `label`. The recorded
fixtures of the older API (run-detail.json, run-unit-11.json, …) stay as recorded.

    python3 frontend/scripts/make-fixtures.py
"""
import copy
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "src" / "test" / "fixtures"
base = json.loads((HERE / "run-detail.json").read_text())
unit11 = json.loads((HERE / "run-unit-11.json").read_text())
kinds = json.loads((HERE / "job-kinds.json").read_text())


def metrics_row(layer, state, step, cd, tau, acc, dacc, n, over=False, scd=None, run_id=None):
    return {"layer": layer, "state": state, "step": step, "clip_delta": cd, "kendall_tau": tau, "clip_w": 0.98,
            "kendall_tau_w": 0.95, "topk_overlap": 0.25, "acc": acc, "delta_acc": dacc, "acc_n_images": n,
            "over_budget": over, "synthetic_clip_delta": scd, "run_id": run_id}


# ---------------------------------------------------------------- a two-layer push-down run
run = copy.deepcopy(base)
run.update(id=5, name="relu2+relu3 push-down", job_id=40, pushup=None, control_run_id=6)
run["attack"] = {**run["attack"], "kind": "push_down", "layers": ["relu2", "relu3"], "decoy_class": None,
                 "acc_budget_pp": 0.5, "steps": 1500, "eval_every": 100, "eval_size": 2000, "lr": 0.0003}
run["attack"].pop("layer", None)
run["layers"] = ["relu2", "relu3"]
run["table"] = [{**run["table"][0], "layer": "relu2"}, {**run["table"][0], "layer": "relu3"}]
run["rows"] = [
    metrics_row("relu3", "final", 1500, 0.511, -0.037, 91.41, -0.59, 10000, over=True, scd=0.205),
    metrics_row("relu3", "selected", 1200, 0.496, 0.158, 91.52, -0.48, 10000, scd=0.187),
    metrics_row("relu2", "selected", 1200, 0.402, 0.301, 91.52, -0.48, 10000, scd=0.121),
    metrics_row("relu2", "final", 1500, 0.420, 0.250, 91.41, -0.59, 10000, over=True, scd=0.133),
    metrics_row("relu2", "control", 1500, 0.012, 0.962, 91.98, -0.02, 10000, run_id=6),
    metrics_row("relu3", "control", 1500, 0.015, 0.955, 91.98, -0.02, 10000, run_id=6),
    metrics_row("all", "selected", 1200, 0.449, 0.2295, 91.52, -0.48, 10000, scd=0.154),
    metrics_row("all", "final", 1500, 0.4655, 0.1065, 91.41, -0.59, 10000, over=True, scd=0.169),
    metrics_row("all", "control", 1500, 0.0135, 0.9585, 91.98, -0.02, 10000, run_id=6),
]
run["accuracy"] = {"init": 92.0, "final": 91.52, "last": 91.41, "delta": -0.48, "selected_step": 1200,
                   "steps": 1500, "over_budget": False}
run["alpha_trajectory"] = [
    {"step": 100, "alpha_before": 0.1, "alpha_after": 0.2, "accuracy": 92.1, "drop_pp": -0.1, "within_budget": True,
     "n_images": 2000, "full_accuracy": None, "full_drop_pp": None, "full_n_images": None},
    {"step": 1200, "alpha_before": 0.4, "alpha_after": 0.8, "accuracy": 91.7, "drop_pp": 0.3, "within_budget": True,
     "n_images": 2000, "full_accuracy": 91.52, "full_drop_pp": 0.48, "full_n_images": 10000},
    {"step": 1500, "alpha_before": 0.8, "alpha_after": 0.4, "accuracy": 91.35, "drop_pp": 0.65, "within_budget": False,
     "n_images": 2000, "full_accuracy": 91.41, "full_drop_pp": 0.59, "full_n_images": 10000},
]
info = run["layer_info"]["relu3"]
run["layer_info"] = {"relu2": {**info, "units": 64, "attacked": list(range(0, 64, 2)), "dead": []}, "relu3": info}
run["per_unit"] = {"relu2": run["per_unit"]["relu3"], "relu3": run["per_unit"]["relu3"]}
run["clip_similarity"] = {"relu2": run["clip_similarity"]["relu3"], "relu3": run["clip_similarity"]["relu3"]}


def synth_units(layer_seed):
    out = []
    for u in range(6):
        out.append({"unit": u, "attacked": u < 4, "natural_clip_delta": round(0.1 * u + layer_seed, 3),
                    "synthetic_clip_delta": round(0.02 * u + layer_seed / 2, 3), "synthetic_transfer": 0.8,
                    "ns_agreement": 1.2})
    return out


run["synthetic"] = {
    "relu2": {"means": {"natural_clip_delta": 0.402, "synthetic_clip_delta": 0.121, "synthetic_transfer": 0.83,
                        "ns_agreement": 1.31}, "units": synth_units(0.05)},
    "relu3": {"means": {"natural_clip_delta": 0.496, "synthetic_clip_delta": 0.187, "synthetic_transfer": 0.71,
                        "ns_agreement": 1.12}, "units": synth_units(0.1)},
}
(HERE / "run-detail-multi.json").write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n")

# ---------------------------------------------------------------- a unit with 4 seeds before/after
syn_url = "/api/v1/runs/5/layers/relu3/units/11/synthetic/{which}/{seed}"
unit = copy.deepcopy(unit11)
unit["synthetic"] = {
    "before": [{"url": syn_url.format(which="before", seed=s), "seed": s} for s in range(4)],
    "after": [{"url": syn_url.format(which="after", seed=s), "seed": s} for s in range(4)],
    "objective": "score", "steps": 256, "size": 64,
    "synthetic_clip_delta": 0.187, "synthetic_transfer": 0.712, "ns_agreement": 1.125,
}
(HERE / "unit-synthetic.json").write_text(json.dumps(unit, indent=1, ensure_ascii=False) + "\n")

# ---------------------------------------------------------------- the model browse
img = "/api/v1/models/1/synthetic/{layer}/{unit}/image/{seed}?job=21"
(HERE / "model-synthetic.json").write_text(json.dumps({
    "model_id": 1,
    "layers": [
        {"layer": "relu1", "units": [{"unit": u, "url": img.format(layer="relu1", unit=u, seed=0), "seed": 0, "job_id": 21}
                                      for u in range(32)]},
        {"layer": "relu3", "units": [{"unit": u, "url": img.format(layer="relu3", unit=u, seed=0), "seed": 0, "job_id": 22}
                                      for u in range(128)]},
    ]}, indent=1) + "\n")
(HERE / "model-synthetic-unit.json").write_text(json.dumps({
    "model_id": 1, "layer": "relu3", "unit": 7,
    "images": [{"url": img.format(layer="relu3", unit=7, seed=s), "seed": s, "objective": "score", "steps": 256,
                "size": 64, "job_id": 22, "state": "init"} for s in range(4)]
    + [{"url": img.format(layer="relu3", unit=7, seed=0) + "&old=1", "seed": 0, "objective": "channel_mean",
        "steps": 128, "size": 64, "job_id": 9, "state": "init"}]}, indent=1) + "\n")

# ---------------------------------------------------------------- a 9-step audit chain
audit = next(k for k in kinds if k["kind"] == "audit")
kind_of = {"scan_init": "scan", "attack": "attack", "scan_selected": "scan", "scan_final": "scan", "metrics": "metrics",
           "visualize": "visualize", "control_attack": "attack", "control_scan": "scan", "control_metrics": "metrics"}
job_base = {"progress": {}, "error": None, "run_id": 5, "depends_on_id": None, "attempts": 1, "worker": "w1",
            "cancel_requested": False, "heartbeat_at": None, "result": {}, "created_at": "2026-12-01T10:00:00Z",
            "started_at": "2026-12-01T10:00:01Z", "finished_at": None}
children = []
for i, st in enumerate(audit["steps"]):
    children.append({**job_base, "id": 41 + i, "kind": kind_of.get(st["key"], "scan"), "status": "succeeded" if i < 2 else "queued",
                     "spec": {}, "parent_id": 40, "children": [], "seq": i + 1, "step_key": st["key"], "label": st["label"]})
parent = {**job_base, "id": 40, "kind": "audit", "status": "running", "label": "audit",
          "step_key": None, "spec": {"name": "relu2+relu3 push-down", "model_id": 1,
                                     "attack": {"kind": "push_down", "layers": ["relu2", "relu3"], "steps": 1500}},
          "parent_id": None, "children": [c["id"] for c in children], "seq": 0,
          "progress": {"stage": "scan", "done": 3, "total": 10, "chain_step": 3, "chain_steps": len(children)}}
(HERE / "job-chain.json").write_text(json.dumps({"job": parent, "children": children}, indent=1, ensure_ascii=False) + "\n")
# ---------------------------------------------------------------- a Gradient Slingshots run (SPEC §8.1) and one of its units
sling = copy.deepcopy(base)
sling.update(id=8, name="relu3 slingshot (Ankle boot)", job_id=80, pushup=None, control_run_id=None, synthetic=None)
sling["attack"] = {**{k: v for k, v in base["attack"].items() if k != "layer"}, "kind": "slingshot", "layers": ["relu3"],
                   "units": [0, 2, 4], "decoy_class": None, "steps": 6, "eval_every": 3,
                   "target_images": [{"image_set_id": 1, "image_id": 19, "artifact_id": None}], "gamma": 1000.0,
                   "tunnel_sd": 0.01, "tunnel_batch": 8, "tunnel_path": "segment", "slingshot_form": "gradient",
                   "slingshot_norm": "cosine", "slingshot_weight": 1.0, "unit_weight": 0.1, "softplus": False,
                   "fv_objective": "score", "fv_transforms": True}
sling["layer_info"] = {"relu3": {"units": 128, "attacked": [0, 2, 4], "dead": [1], "n_images": 2000}}
sling["fv_target"] = {"relu3": {
    "units": 3, "moved_share": 2 / 3, "moved_by": "embedder cosine",
    "ssim_target_after": 0.412, "ssim_target_before": 0.051, "ssim_original_after": 0.233,
    "mse_target_after": 0.061, "mse_target_before": 0.187,
    "cos_target_after": 0.734, "cos_target_before": 0.402, "cos_original_after": 0.515,
    "auroc_before": 0.981, "auroc_after": 0.973, "agreement_before": 1.21, "agreement_after": 0.94,
    "cross_check": "disagree"}}
(HERE / "run-detail-slingshot.json").write_text(json.dumps(sling, indent=1, ensure_ascii=False) + "\n")

sl_url = "/api/v1/runs/8/layers/relu3/units/{u}/synthetic/{which}/{seed}"


def sling_unit(u, moved, ssim_after, verdict):
    d = copy.deepcopy(unit11)
    d.update(unit=u, layer="relu3", attacked=True, dead=False, prev_attacked=None, next_attacked=None)
    d["synthetic"] = {
        "before": [{"url": sl_url.format(u=u, which="before", seed=s), "seed": s} for s in (100, 101)],
        "after": [{"url": sl_url.format(u=u, which="after", seed=s), "seed": s} for s in (100, 101)],
        "objective": "score", "steps": 8, "size": 28,
        "synthetic_clip_delta": 0.301, "synthetic_transfer": 0.552, "ns_agreement": 0.94,
    }
    d["fv_target"] = {
        "target_url": f"/api/v1/runs/8/layers/relu3/units/{u}/target", "moved": moved, "moved_by": "embedder cosine",
        "cross_check": verdict, "top_class": 7,
        "measures": {"ssim_target_after": ssim_after, "ssim_target_before": 0.048, "ssim_original_after": 0.241,
                     "mse_target_after": 0.058, "mse_target_before": 0.191, "cos_target_after": 0.751,
                     "cos_target_before": 0.398, "cos_original_after": 0.507, "auroc_before": 0.985,
                     "auroc_after": 0.977, "agreement_before": 1.25, "agreement_after": 0.94 if verdict == "disagree" else 1.08},
    }
    return d


(HERE / "unit-slingshot.json").write_text(json.dumps(sling_unit(2, True, 0.425, "disagree"), indent=1, ensure_ascii=False) + "\n")
(HERE / "unit-slingshot-4.json").write_text(json.dumps(sling_unit(4, False, 0.118, "agree"), indent=1, ensure_ascii=False) + "\n")
print("fixtures written to", HERE)
