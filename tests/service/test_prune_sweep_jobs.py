"""Pruning defences on the real stack (SPEC §5): a two-point sweep end to end (the unpruned model
and norm pruning at 50 %, each fine-tuned and audited by push-down and push-up), the pruned
model's lineage and zeros through the attack, the results table and its exports; and the
422s of bad prune and sweep requests, each naming its field."""
from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from fvaudit.engine.defence.sweep_table import COLUMNS

#: prunable weights of the demo CNN: conv 1·32·9 + 32·64·9 + 64·128·9, fc 1152·128 + 128·10
N_WEIGHTS = 288 + 18432 + 73728 + 147456 + 1280


def _attack(stack, **kw) -> dict:
    return {"layers": ["relu1"], "steps": 10, "batch_size": 32, "eval_every": 5, "eval_size": 200, "lr": 1e-3,
            "checkpoint_every": 5, **kw}


def sweep_spec(stack, **kw) -> dict:
    spec = {"name": "two-point sweep", "train_set_id": stack.ids["train"], "val_set_id": stack.ids["val"],
            "base": {"model_id": stack.ids["model"],
                     "prune": {"method": "norm", "rate": 0.5,
                               "finetune": {"steps": 8, "batch_size": 32, "train_limit": 500, "lr": 1e-4}},
                     "attack": _attack(stack)},
            "grid": [{"field": "prune.rate", "values": [0.5]}], "baseline": True,
            "attacks": ["push_down", "push_up"], "decoy_class": "Bag", "k_clip": 5, "embedder": "efficientnet-lite0"}
    spec.update(kw)
    return spec


def _zeros(path) -> tuple[int, dict]:
    from safetensors.torch import load_file

    state = load_file(str(path))
    w = {k: v for k, v in state.items() if k.endswith(".weight")}
    return sum(int((v == 0).sum()) for v in w.values()), w


@pytest.fixture(scope="module")
def sweep(stack):
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": sweep_spec(stack)})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=900)
    assert done["status"] == "succeeded", done
    return done


def test_two_point_sweep_steps(stack, sweep):
    kids = [stack.job(k) for k in sweep["children"]]
    keys = [k["step_key"] for k in kids]
    audit = ["attack", "scan_selected", "scan_final", "metrics"]
    assert keys == (["p0.scan_init"] + [f"p0.push_down.{s}" for s in audit] + [f"p0.push_up.{s}" for s in audit]
                    + ["p1.prune", "p1.scan_init"] + [f"p1.push_down.{s}" for s in audit]
                    + [f"p1.push_up.{s}" for s in audit])
    assert all(k["status"] == "succeeded" for k in kids)
    assert kids[9]["label"] == "point 1 · prune + fine-tune"
    assert kids[11]["label"] == "point 1 · push-down · attack"
    # the push-up reuses the point's one θ_init scan
    assert kids[5]["spec"]["init_scan_job_id"] == kids[0]["id"]
    assert kids[15]["spec"]["init_scan_job_id"] == kids[10]["id"]


def test_pruned_model_lineage_and_exact_zeros(stack, sweep, db_env):
    from fvaudit.db.tables import Artifact, Job, Model
    from fvaudit.db.session import session_scope
    from fvaudit.store import get_store

    prune_job = stack.job(next(k for k in sweep["children"] if stack.job(k)["step_key"] == "p1.prune"))
    mid = prune_job["result"]["model_id"]
    m = stack.get(f"/api/v1/models/{mid}").json()
    assert m["parent_model_id"] == stack.ids["model"] and m["prune_job_id"] == prune_job["id"]
    rec = m["prune"]
    assert rec["method"] == "norm" and rec["rate"] == 0.5
    assert rec["weight_rate"] == 0.5 and rec["report"]["weights_zeroed"] == N_WEIGHTS // 2
    assert rec["finetune"]["phases"] == [[4, 1e-4], [4, 1e-5]] and rec["finetune"]["train_images"] == 500
    assert rec["acc_n_images"] == 400 and 0 <= rec["finetuned_acc"] <= 100
    with session_scope() as db:
        model = db.get(Model, mid)
        n_zero, pruned = _zeros(get_store().path(model.checkpoint))
        attack = db.scalar(select(Job).where(Job.parent_id == sweep["id"], Job.step_key == "p1.push_down.attack"))
        # the final state: every step of the attack is in it (the selected one is θ_init itself
        # when neither of the two evaluations on 200 images stayed within the 0.5 pp budget)
        art = db.scalar(select(Artifact).where(Artifact.sha256 == attack.result["final_sha"]))
        _, attacked = _zeros(get_store().path(art))
    # exactly half of the conv/linear weights are zero after fine-tuning, and they are still zero
    # after the push-down attack on the pruned model (its masks were re-attached by the worker)
    assert n_zero == N_WEIGHTS // 2
    assert all(int((attacked[k][pruned[k] == 0] != 0).sum()) == 0 for k in pruned)
    assert any(int((attacked[k] != pruned[k]).sum()) > 0 for k in pruned)      # the attack did change weights


def test_sweep_table_and_exports(stack, sweep):
    d = stack.get(f"/api/v1/sweeps/{sweep['id']}").json()
    assert d["name"] == "two-point sweep" and d["status"] == "succeeded" and d["n_points"] == 2
    assert [(r["point"], r["attack"]) for r in d["rows"]] == [(0, "push_down"), (0, "push_up"), (1, "push_down"),
                                                              (1, "push_up")]
    runs = {(p["idx"], a): au["run_id"] for p in d["points"] for a, au in p["audits"].items()}
    for r in d["rows"]:
        assert r["status"] == "succeeded" and r["run_id"] == runs[(r["point"], r["attack"])]
        assert r["clip_delta"] is not None and r["acc_n_images"] == 400
        run = stack.get(f"/api/v1/runs/{r['run_id']}").json()
        sel = next(x for x in run["rows"] if x["state"] == "selected" and x["layer"] == "relu1")
        assert r["clip_delta"] == sel["clip_delta"] and r["acc"] == sel["acc"]
    pruned = d["points"][1]
    assert d["rows"][2]["method"] == "norm" and d["rows"][2]["weight_rate"] == 0.5
    assert d["rows"][2]["finetuned_acc"] == pruned["prune"]["finetuned_acc"]
    assert d["rows"][2]["model_id"] == pruned["model_id"] != stack.ids["model"]
    # the unpruned point's accuracy is the base model's, measured by its attack before attacking
    r0 = d["rows"][0]
    assert r0["method"] is None and r0["model_id"] == stack.ids["model"]
    assert abs(r0["finetuned_acc"] - (r0["acc"] - r0["delta_acc"])) < 1e-6
    assert d["curves"]["norm"]["rate"] == [0.0, 0.5]
    assert d["curves"]["norm"]["clip_delta_push_down"] == [d["rows"][0]["clip_delta"], d["rows"][2]["clip_delta"]]
    text = stack.get(f"/api/v1/sweeps/{sweep['id']}/table?format=csv").text
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(COLUMNS) and len(table) == 5
    assert table[3][COLUMNS.index("run_id")] == str(d["rows"][2]["run_id"])
    md = stack.get(f"/api/v1/sweeps/{sweep['id']}/table?format=md").text.splitlines()
    assert len(md) == 6 and "| norm 50% | norm | 50.0% | 50.0% |" in md[4]
    js = stack.get(f"/api/v1/sweeps/{sweep['id']}/table?format=json").json()
    assert js["rows"] == d["rows"] and js["curves"] == d["curves"]
    assert [s["id"] for s in stack.get("/api/v1/sweeps").json()][:1] == [sweep["id"]]


def test_vulnerability_pruning_removes_the_baselines_top_clip_delta_channels(stack):
    """The baseline's push-down of relu1 ranks the channels; the vulnerability point's prune step waits
    for its metrics, removes the top round(0.25·32) = 8 by CLIP-δ, and its audit runs on the narrower model."""
    spec = sweep_spec(stack, name="vulnerability sweep", attacks=["push_down"], decoy_class=None,
                      grid=[{"field": "prune.rate", "values": [0.25]}])
    spec["base"]["prune"] = {"method": "vulnerability", "rate": 0.25,
                             "finetune": {"steps": 4, "batch_size": 32, "train_limit": 300}}
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=900)
    assert done["status"] == "succeeded", done
    kids = {stack.job(k)["step_key"]: stack.job(k) for k in done["children"]}
    assert kids["p1.prune"]["depends_on_id"] == kids["p0.push_down.metrics"]["id"]
    base_run = kids["p0.push_down.attack"]["run_id"]
    assert kids["p1.prune"]["spec"]["prune"]["delta_run_id"] == base_run
    assert kids["p1.prune"]["spec"]["prune"]["layer"] == "relu1"
    units = stack.get(f"/api/v1/runs/{base_run}/layers/relu1/units?sort=clip_delta&order=desc&page_size=100").json()
    ranked = sorted(units["items"], key=lambda u: (u["clip_delta"] is None, -(u["clip_delta"] or 0), u["unit"]))
    top8 = sorted(u["unit"] for u in ranked[:8])
    m = stack.get(f"/api/v1/models/{kids['p1.prune']['result']['model_id']}").json()
    assert m["prune"]["channels"] == top8
    layers = {l["name"]: l for l in stack.get(f"/api/v1/models/{m['id']}/layers").json()}
    assert layers["relu1"]["units"] == 24 and layers["relu2"]["units"] == 64
    # conv1 lost 8 of 32 filters: filter rate 8 / (32 + 64 + 128) conv filters
    assert m["prune"]["filter_rate"] == 8 / 224
    pruned_run = stack.get(f"/api/v1/runs/{kids['p1.push_down.attack']['run_id']}").json()
    assert pruned_run["status"] == "succeeded" and pruned_run["layer_info"]["relu1"]["units"] == 24


def test_a_standalone_prune_job_registers_a_model(stack):
    spec = {"model_id": stack.ids["model"], "train_set_id": stack.ids["train"], "val_set_id": stack.ids["val"],
            "prune": {"method": "norm", "rate": 0.25, "finetune": {"steps": 2, "batch_size": 16, "train_limit": 100}}}
    r = stack.post("/api/v1/jobs", {"kind": "prune", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=300)
    assert done["status"] == "succeeded", done
    m = stack.get(f"/api/v1/models/{done['result']['model_id']}").json()
    assert m["prune"]["report"]["weights_zeroed"] == round(0.25 * N_WEIGHTS) == 60296
    assert m["prune_job_id"] == done["id"] and m["name"] == "demo cnn · norm 25%"


def test_a_failed_point_fails_the_sweep_with_its_reason_and_the_others_keep_their_results(stack, db_env):
    """Per-model rows (a grid over model_id, no pruning): the second model's weights are gone from
    the store (it passes the request's checks, which read rows only), so its point fails when the
    worker loads it; the first point runs to the end and keeps its results and its run's status."""
    import torch

    from fvaudit.db.tables import Model
    from fvaudit.db.session import session_scope
    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.engine.models.sources import load_model
    from fvaudit.store import get_store

    path = save_checkpoint(load_model("fmnist-cnn").module, stack.allowed / "copy.safetensors")
    r = stack.post("/api/v1/models", {"name": "lost weights", "registry_name": "fmnist-cnn",
                                      "checkpoint_path": str(path)})
    assert r.status_code == 201, r.text
    lost = r.json()["id"]
    with session_scope() as db:
        get_store().path(db.get(Model, lost).checkpoint).unlink()
    spec = sweep_spec(stack, name="per-model rows", baseline=False, attacks=["push_down"], decoy_class=None,
                      grid=[{"field": "model_id", "values": [stack.ids["model"], lost]}])
    spec["base"]["prune"] = None
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=600)
    kids = {stack.job(k)["step_key"]: stack.job(k) for k in done["children"]}
    assert done["status"] == "failed"
    assert done["error"].startswith(f"step 6 (p1.scan_init, job {kids['p1.scan_init']['id']}) failed: ")
    assert "does not exist" in kids["p1.scan_init"]["error"]
    assert all(kids[f"p0.{k}"]["status"] == "succeeded" for k in
               ("scan_init", "push_down.attack", "push_down.scan_selected", "push_down.scan_final", "push_down.metrics"))
    assert kids["p1.push_down.attack"]["status"] == "failed"
    assert kids["p1.push_down.attack"]["error"].startswith(f"not run: upstream job {kids['p1.scan_init']['id']}")
    d = stack.get(f"/api/v1/sweeps/{done['id']}").json()
    assert [p["label"] for p in d["points"]] == [f"model_id={stack.ids['model']}", f"model_id={lost}"]
    ok, bad = d["rows"]
    assert ok["status"] == "succeeded" and ok["clip_delta"] is not None and ok["acc_n_images"] == 400
    assert bad["status"] == "failed" and bad["clip_delta"] is None
    # each point's run follows its own steps, not the sweep's status
    assert stack.get(f"/api/v1/runs/{ok['run_id']}").json()["status"] == "succeeded"
    bad_run = stack.get(f"/api/v1/runs/{bad['run_id']}").json()
    assert bad_run["status"] == "failed" and "p1.scan_init" in bad_run["error"]


def test_a_pruned_model_whose_prune_job_did_not_succeed_is_refused(stack):
    """A sweep creates its pruned models' rows at launch; cancelled at once, its prune step never
    ran, so that model has no weights: a job naming it is a 422, not a worker failure."""
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": sweep_spec(stack, name="cancelled sweep")})
    assert r.status_code == 201, r.text
    sweep = r.json()
    assert stack.post(f"/api/v1/jobs/{sweep['id']}/cancel").status_code == 200
    done = stack.wait_job(sweep["id"], timeout=300)
    assert done["status"] == "cancelled", [(stack.job(k)["step_key"], stack.job(k)["status"], stack.job(k)["error"])
                                           for k in sweep["children"]]
    prune = next(stack.job(k) for k in sweep["children"] if stack.job(k)["step_key"] == "p1.prune")
    assert prune["status"] == "cancelled"
    point = stack.get(f"/api/v1/sweeps/{sweep['id']}").json()["points"][1]
    m = stack.get(f"/api/v1/models/{point['model_id']}").json()
    assert m["prune_job_id"] == prune["id"] and m["prune"] is None and m["parent_model_id"] == stack.ids["model"]
    spec = stack.audit_spec()
    spec["model_id"] = m["id"]
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert _loc(r) == ["body", "spec", "model_id"]
    assert r.json()["detail"][0]["msg"] == f"model {m['id']} is not ready: its prune job {prune['id']} has not succeeded"


# ---------------------------------------------------------------- 422 naming the field

def _prune(stack, **prune) -> dict:
    return {"kind": "prune", "spec": {"model_id": stack.ids["model"], "train_set_id": stack.ids["train"],
                                      "val_set_id": stack.ids["val"], "prune": prune}}


def _loc(r) -> list:
    assert r.status_code == 422, r.text
    return r.json()["detail"][0]["loc"]


@pytest.mark.parametrize("prune, loc, words", [
    ({"method": "norm", "rate": 1.0}, ["prune", "rate"], "less than 1"),
    ({"method": "norm", "rate": 0.0}, ["prune", "rate"], "greater than 0"),
    ({"method": "norm"}, ["prune", "rate"], "needs a rate"),
    ({"method": "magnitude", "rate": 0.5}, ["prune", "method"], "'norm'"),
    ({"method": "vulnerability", "rate": 0.5, "layer": "conv9"}, ["prune", "layer"], "unknown layer 'conv9'"),
    ({"method": "vulnerability", "layer": "relu1", "channels": [0, 32]}, ["prune", "channels", 1],
     "channel 32 out of range for layer relu1 of demo cnn: it has 32 channels"),
    ({"method": "vulnerability", "rate": 0.5, "layer": "relu1"}, ["prune", "delta_run_id"],
     "needs a push-down run of that layer on model"),
    ({"method": "norm", "rate": 0.5, "channels": [1]}, ["prune", "channels"], "only for vulnerability"),
])
def test_prune_422(stack, prune, loc, words):
    r = stack.post("/api/v1/jobs", _prune(stack, **prune))
    assert _loc(r) == ["body", "spec", *loc]
    assert words in r.json()["detail"][0]["msg"]


def test_prune_422_a_delta_run_that_is_not_a_push_down_of_the_layer(stack, audit_run):
    run_id = audit_run["run_id"]       # a push-down of relu1
    r = stack.post("/api/v1/jobs", _prune(stack, method="vulnerability", rate=0.5, layer="relu2", delta_run_id=run_id))
    assert _loc(r) == ["body", "spec", "prune", "delta_run_id"]
    assert f"run {run_id} is not a push-down of relu2" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize("change, loc, words", [
    ({"grid": [{"field": "prune.rate", "values": [0.5, 1.5]}]}, ["grid", 0, "values", 1], "less than 1"),
    ({"grid": [{"field": "prune.method", "values": ["norm", "random"]}]}, ["grid", 0, "values", 1], "'norm'"),
    ({"grid": [{"field": "attack.layers", "values": [["relu1"], ["conv9"]]}]}, ["grid", 0, "values", 1, 0],
     "unknown layer 'conv9'"),
    ({"base_attack_layers": ["conv9"]}, ["base", "attack", "layers", 0], "unknown layer 'conv9'"),
    ({"baseline": False, "grid": [{"field": "prune.method", "values": ["vulnerability"]}]},
     ["base", "prune", "delta_run_id"], "needs a push-down run"),
    ({"grid": [{"field": "prune.method", "values": ["vulnerability"]}], "attacks": ["push_up"]},
     ["base", "prune", "delta_run_id"], "needs a push-down run"),
    ({"grid": [{"field": "prune.channels", "values": [[0, 99]]}], "base_prune_method": "vulnerability"},
     ["grid", 0, "values", 0, 1], "channel 99 out of range"),
    ({"grid": [{"field": "prune.bogus", "values": [1]}]}, ["grid", 0, "field"], "no field bogus"),
    ({"attacks": ["push_up"], "decoy_class": None}, ["decoy_class"], "push_up needs a decoy class"),
    ({"grid": [{"field": "prune.method", "values": ["vulnerability"]}], "embedder": "none"}, ["embedder"],
     "embedder none does not measure"),
    ({"decoy_class": "Spaceship"}, ["decoy_class"], "unknown class 'Spaceship'"),
])
def test_sweep_422(stack, change, loc, words):
    spec = sweep_spec(stack)
    if "base_attack_layers" in change:
        spec["base"]["attack"]["layers"] = change.pop("base_attack_layers")
    if "base_prune_method" in change:
        spec["base"]["prune"] = {"method": change.pop("base_prune_method"), "layer": "relu1", "channels": [0]}
    spec.update(change)
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": spec})
    assert _loc(r) == ["body", "spec", *loc], r.text
    assert words in r.json()["detail"][0]["msg"]
