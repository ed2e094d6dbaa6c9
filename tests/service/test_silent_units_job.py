"""The ``silent_units`` job on the real stack (SPEC §8.3): the manipulated model is built,
stored as a safetensors checkpoint with its architecture record, registered with its lineage,
measured (the report in the job's result), and loads again in another job (a scan of it);
bad requests get a 422 naming the field."""
from __future__ import annotations

import pytest


def silent_spec(stack, **kw) -> dict:
    spec = {"name": "silent demo", "model_id": stack.ids["model"], "layer": "relu3", "units": [72, 5],
            "target": {"image_set_id": stack.ids["val"], "image_id": 0}, "natural_set_id": stack.ids["train"],
            "val_set_id": stack.ids["val"], "fv_steps": 32, "fv_seeds": 1}
    spec.update(kw)
    return {"kind": "silent_units", "spec": spec}


@pytest.fixture(scope="module")
def silent_job(stack):
    r = stack.post("/api/v1/jobs", silent_spec(stack))
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=300)
    assert done["status"] == "succeeded", done
    return done


def test_silent_units_job_registers_the_manipulated_model_with_its_lineage(stack, silent_job):
    res = silent_job["result"]
    rec, rep = res["record"], res["report"]
    assert rec["conv"] == "conv3" and rec["units"] == [72, 5] and rec["lam"] == 3.0 and rec["s"] == 100.0
    assert rec["natural_images"] == 1500 and len(rec["silent_bias"]) == 2
    m = stack.get(f"/api/v1/models/{res['model_id']}").json()
    assert m["parent_model_id"] == stack.ids["model"] and m["source"] == "silent_units" and m["name"] == "silent demo"
    assert m["prune"] is None and m["registry_name"] == "fmnist-cnn"
    layers = {l["name"]: l for l in stack.get(f"/api/v1/models/{res['model_id']}/layers").json()}
    assert layers["conv3"]["module_type"] == "SilentConv" and layers["relu3"]["units"] == 128
    # the report: natural behaviour on the validation set, every unit's top-k, the renders
    nat = rep["natural"]
    assert nat["images"] == 400 and nat["acc_original"] == nat["acc_manipulated"] and nat["predictions_identical"]
    assert rep["topk"]["units"] == 128
    assert [u["unit"] for u in rep["fv"]["units"]] == [72, 5]
    for u in rep["fv"]["units"]:
        assert {"mse", "corr"} <= set(u["silent_fv_to_target"]) and u["fv_activation_silent"] > 0


def test_the_manipulated_model_loads_in_another_job(stack, silent_job):
    """A scan job loads it through its checkpoint (the architecture rebuilt from the record)."""
    mid = silent_job["result"]["model_id"]
    r = stack.post("/api/v1/jobs", {"kind": "scan", "spec": {"model_id": mid, "image_set_ids": [stack.ids["val"]],
                                                             "layers": ["relu3"], "k": 5}})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=300)
    assert done["status"] == "succeeded", done


def _loc(r) -> list:
    assert r.status_code == 422, r.text
    return r.json()["detail"][0]["loc"]


@pytest.mark.parametrize("change, loc, words", [
    ({"units": [0, 128]}, ["units", 1], "unit 128 out of range for layer relu3"),
    ({"units": [3, 3]}, ["units"], "unique"),
    ({"units": []}, ["units"], "at least 1"),
    ({"units": list(range(65))}, ["units"], "at most 64"),
    ({"layer": "conv9"}, ["layer"], "unknown layer 'conv9'"),
    ({"layer": "fc1"}, ["layer"], "not a conv layer"),
    ({"model_id": 999_999}, ["model_id"], "unknown model id"),
    ({"target": {"image_set_id": 999_999, "image_id": 0}}, ["target", "image_set_id"], "unknown image set id"),
    ({"target": {"image_set_id": "VAL", "image_id": 400}}, ["target", "image_id"], "image 400 is not in image set"),
    ({"target": [{"image_set_id": "VAL", "image_id": 0}, {"image_set_id": "VAL", "image_id": 10_000}]},
     ["target", 1, "image_id"], "image 10000 is not in image set"),
    ({"target": [{"image_set_id": "VAL", "image_id": 0}] * 3}, ["target"], "one per unit (2), got 3"),
    ({"natural_set_id": 999_999}, ["natural_set_id"], "unknown image set id"),
    ({"lam": 0}, ["lam"], "greater than 0"),
])
def test_silent_units_422(stack, change, loc, words):
    def fix(v):
        if isinstance(v, dict):
            return {k: (stack.ids["val"] if x == "VAL" else x) for k, x in v.items()}
        return [fix(x) for x in v] if isinstance(v, list) else v
    body = silent_spec(stack, **{k: fix(v) for k, v in change.items()})
    r = stack.post("/api/v1/jobs", body)
    got = _loc(r)
    assert got[:2 + len(loc)] == ["body", "spec", *loc], r.text
    assert words in r.json()["detail"][0]["msg"], r.text
