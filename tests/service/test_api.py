"""HTTP API: validation (422 naming the field), access control, share links, uploads, images."""
from __future__ import annotations

import os
import pickle

import httpx
import numpy as np
import pytest


# ---------------------------------------------------------------- validation

def _audit(stack, **over):
    spec = stack.audit_spec()
    attack = over.pop("attack", {})
    spec["attack"].update(attack)
    spec.update(over)
    return {"kind": "audit", "spec": spec}


INVALID_AUDITS = [
    ("unknown model", {"model_id": 999_999}, ["body", "spec", "model_id"]),
    ("unknown train set", {"train_set_id": 999_999}, ["body", "spec", "train_set_id"]),
    ("unknown val set", {"val_set_id": 999_999}, ["body", "spec", "val_set_id"]),
    ("unknown layer", {"attack": {"layers": ["relu1", "conv9"]}}, ["body", "spec", "attack", "layers", 1]),
    ("no layer", {"attack": {"layers": []}}, ["body", "spec", "attack", "layers"]),
    ("a layer twice", {"attack": {"layers": ["relu1", "relu1"]}}, ["body", "spec", "attack", "layers"]),
    ("units with two layers", {"attack": {"layers": ["relu1", "relu2"], "units": [0]}},
     ["body", "spec", "attack", "units"]),
    ("k is a boolean", {"attack": {"k": True}}, ["body", "spec", "attack", "k"]),
    ("steps is a string", {"attack": {"steps": "20"}}, ["body", "spec", "attack", "steps"]),
    ("k_clip above k", {"k_clip": 11, "attack": {"k": 10}}, ["body", "spec", "k_clip"]),
    ("alpha_factor = 1", {"attack": {"alpha_factor": 1.0}}, ["body", "spec", "attack", "alpha_factor"]),
    ("n_synth = 0", {"n_synth": 0}, ["body", "spec", "n_synth"]),
    ("embedder naming a path", {"embedder": "open_clip:../../etc:passwd"}, ["body", "spec", "embedder"]),
    ("unit out of range", {"attack": {"units": [0, 32]}}, ["body", "spec", "attack", "units", 1]),
    ("negative unit", {"attack": {"units": [-1]}}, ["body", "spec", "attack", "units", 0]),
    ("k = 0", {"attack": {"k": 0}}, ["body", "spec", "attack", "k"]),
    ("k < 0", {"attack": {"k": -5}}, ["body", "spec", "attack", "k"]),
    ("k above the set size", {"attack": {"k": 5000}}, ["body", "spec", "attack", "k"]),
    ("alpha > 1", {"attack": {"alpha": 1.5}}, ["body", "spec", "attack", "alpha"]),
    ("alpha < 0", {"attack": {"alpha": -0.1}}, ["body", "spec", "attack", "alpha"]),
    ("finetune with alpha", {"attack": {"kind": "finetune", "alpha": 0.5}}, ["body", "spec", "attack", "alpha"]),
    ("lr = 0", {"attack": {"lr": 0}}, ["body", "spec", "attack", "lr"]),
    ("lr < 0", {"attack": {"lr": -1e-4}}, ["body", "spec", "attack", "lr"]),
    ("steps = 0", {"attack": {"steps": 0}}, ["body", "spec", "attack", "steps"]),
    ("batch_size = 0", {"attack": {"batch_size": 0}}, ["body", "spec", "attack", "batch_size"]),
    ("push-up without decoy", {"attack": {"kind": "push_up"}}, ["body", "spec", "attack", "decoy_class"]),
    ("decoy class out of range", {"attack": {"kind": "push_up", "decoy_class": 10}},
     ["body", "spec", "attack", "decoy_class"]),
    ("unknown decoy class name", {"attack": {"kind": "push_up", "decoy_class": "Goldfish"}},
     ["body", "spec", "attack", "decoy_class"]),
    ("decoy id out of range", {"attack": {"kind": "push_up", "decoy_ids": [3, 1500]}},
     ["body", "spec", "attack", "decoy_ids", 1]),
    ("unknown score_norm", {"attack": {"score_norm": "max"}}, ["body", "spec", "attack", "score_norm"]),
    ("checkpoint outside the allowed roots", {"checkpoint_path": "/etc/passwd"}, ["body", "spec", "checkpoint_path"]),
    ("path traversal", {"checkpoint_path": "ALLOWED/../../../etc/passwd"}, ["body", "spec", "checkpoint_path"]),
    ("unknown embedder", {"embedder": "clipper"}, ["body", "spec", "embedder"]),
    ("k_clip = 0", {"k_clip": 0}, ["body", "spec", "k_clip"]),
    ("unknown field", {"attack": {"alpah": 0.5}}, ["body", "spec", "attack", "alpah"]),
]


@pytest.mark.parametrize("case,over,loc", INVALID_AUDITS, ids=[c[0] for c in INVALID_AUDITS])
def test_invalid_audit_spec_is_422_naming_the_field(stack, case, over, loc):
    if "checkpoint_path" in over:
        over = {**over, "checkpoint_path": over["checkpoint_path"].replace("ALLOWED", str(stack.allowed))}
    r = stack.post("/api/v1/jobs", _audit(stack, **over))
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert loc in locs, locs
    assert all(e["msg"] for e in r.json()["detail"])


def test_invalid_job_kind_and_scan_and_metrics_specs(stack):
    r = stack.post("/api/v1/jobs", {"kind": "no_such_kind", "spec": {}})   # ("prune" is a kind now)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
    scan = {"model_id": stack.ids["model"], "image_set_ids": [stack.ids["val"]], "layers": ["relu1"], "k": 10}
    for over, loc in (({"layers": ["relu1", "nope"]}, ["body", "spec", "layers", 1]),
                      ({"image_set_ids": [999_999]}, ["body", "spec", "image_set_ids", 0]),
                      ({"k": 0}, ["body", "spec", "k"]),
                      ({"weights_from": {"job_id": 999_999}}, ["body", "spec", "weights_from", "job_id"]),
                      ({"checkpoint_path": "/root/x.safetensors"}, ["body", "spec", "checkpoint_path"])):
        r = stack.post("/api/v1/jobs", {"kind": "scan", "spec": {**scan, **over}})
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], (over, r.text)
    r = stack.post("/api/v1/jobs", {"kind": "metrics", "spec": {"before_scan_job_id": 999_999, "after_scan_job_id": 1,
                                                                  "val_set_id": stack.ids["val"]}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "spec", "before_scan_job_id"]
    r = stack.post("/api/v1/jobs", {"kind": "attack", "spec": {**stack.attack_spec(), "model_id": 0}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "spec", "model_id"]


def test_pickled_checkpoint_path_is_refused_at_submission(stack, tmp_path):
    """The same screen as model registration, before any job row exists (not in the worker, later)."""
    import torch

    marker = tmp_path / "pwned"
    evil = stack.allowed / "evil-spec.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, evil)
    n_jobs = len(stack.get("/api/v1/jobs", params={"limit": 1000}).json())
    for kind, spec in (("audit", _audit(stack, checkpoint_path=str(evil))["spec"]),
                       ("scan", {"model_id": stack.ids["model"], "image_set_ids": [stack.ids["val"]],
                                 "layers": ["relu1"], "checkpoint_path": str(evil)})):
        r = stack.post("/api/v1/jobs", {"kind": kind, "spec": spec})
        assert r.status_code == 422, r.text
        d = r.json()["detail"][0]
        assert d["loc"] == ["body", "spec", "checkpoint_path"] and "refused" in d["msg"]
    assert len(stack.get("/api/v1/jobs", params={"limit": 1000}).json()) == n_jobs
    assert not marker.exists()


def test_validation_set_too_small_or_with_other_classes_is_refused(stack):
    small = stack.post("/api/v1/image-sets", {"name": "five", "source": "fashion-mnist:test", "limit": 5}).json()
    r = stack.post("/api/v1/jobs", _audit(stack, val_set_id=small["id"]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "spec", "attack", "k"], r.text
    assert "validation set" in r.json()["detail"][0]["msg"]
    folder = _image_folder(stack.allowed / "two-classes")
    pets = stack.register_folder("two classes", folder)
    r = stack.post("/api/v1/jobs", _audit(stack, val_set_id=pets["id"]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "spec", "val_set_id"], r.text
    assert "2 classes" in r.json()["detail"][0]["msg"]


def test_image_set_paths_outside_allowed_roots_are_refused(stack, tmp_path):
    for source in ("/etc", str(stack.allowed / ".." / ".."), "fashion-mnist:validation"):
        r = stack.post("/api/v1/image-sets", {"name": "x", "source": source})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "source"]
    outside = tmp_path / "outside"
    _image_folder(outside)
    link = stack.allowed / "escape"
    if not link.exists():
        os.symlink(outside, link)
    r = stack.post("/api/v1/image-sets", {"name": "escape", "source": str(link)})
    assert r.status_code == 422 and "outside the allowed roots" in r.json()["detail"][0]["msg"]


def test_unknown_registry_model_is_422(stack):
    r = stack.post("/api/v1/models", {"name": "x", "registry_name": "no-such-net"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "registry_name"]


# ---------------------------------------------------------------- access

def test_writes_need_a_token(stack, audit_run):
    anon = httpx.Client(base_url=stack.base, timeout=30)
    assert anon.post("/api/v1/jobs", json=_audit(stack)).status_code == 401
    assert anon.post("/api/v1/models", json={"name": "x", "registry_name": "fmnist-cnn"}).status_code == 401
    assert anon.post("/api/v1/image-sets", json={"name": "x", "source": "fashion-mnist:test"}).status_code == 401
    assert anon.post(f"/api/v1/jobs/{audit_run['id']}/cancel").status_code == 401
    assert anon.post(f"/api/v1/runs/{audit_run['run_id']}/shares").status_code == 401
    assert anon.get("/api/v1/me").status_code == 401
    bad = {"Authorization": "Bearer fva_not-a-real-token-at-all"}
    assert anon.post("/api/v1/jobs", json=_audit(stack), headers=bad).status_code == 401
    assert anon.get("/api/v1/runs", headers=bad).status_code == 401


def test_runs_are_private_to_their_owner(stack, audit_run):
    rid, jid = audit_run["run_id"], audit_run["id"]
    assert stack.get(f"/api/v1/runs/{rid}", who="alice").status_code == 200
    assert stack.get(f"/api/v1/runs/{rid}", who=None).status_code == 404
    for path in (f"/api/v1/runs/{rid}", f"/api/v1/runs/{rid}/layers/relu1/units",
                 f"/api/v1/runs/{rid}/layers/relu1/units/0", f"/api/v1/runs/{rid}/export.json",
                 f"/api/v1/runs/{rid}/export.csv", f"/api/v1/jobs/{jid}", f"/api/v1/runs/{rid}/shares"):
        assert stack.get(path, who="bob").status_code == 404, path
    assert stack.post(f"/api/v1/jobs/{jid}/cancel", who="bob").status_code == 404
    assert stack.post(f"/api/v1/runs/{rid}/shares", who="bob").status_code == 404
    assert rid not in [r["id"] for r in stack.get("/api/v1/runs", who="bob").json()]
    assert rid in [r["id"] for r in stack.get("/api/v1/runs", who="alice").json()]
    assert stack.get(f"/api/v1/runs/{rid}", who="admin").status_code == 200
    me = stack.get("/api/v1/me", who="bob").json()
    assert me["user"] == "bob" and me["is_admin"] is False


def test_share_link_reads_its_run_and_nothing_else(stack, audit_run):
    rid = audit_run["run_id"]
    other = stack.post("/api/v1/jobs", _audit(stack), who="alice").json()   # another run of the same owner
    r = stack.post(f"/api/v1/runs/{rid}/shares", who="alice")
    assert r.status_code == 201, r.text
    share = r.json()
    assert len(share["token"]) >= 40 and share["url"].endswith(f"/runs/{rid}?share={share['token']}")
    assert [s["token"] for s in stack.get(f"/api/v1/runs/{rid}/shares", who="alice").json()] == [share["token"]]
    anon = httpx.Client(base_url=stack.base, timeout=30)
    q = {"share": share["token"]}
    run = anon.get(f"/api/v1/runs/{rid}", params=q)
    assert run.status_code == 200 and run.json()["read_only"] is True
    assert anon.get(f"/api/v1/runs/{rid}", headers={"X-Share-Token": share["token"]}).status_code == 200
    assert anon.get(f"/api/v1/runs/{rid}/layers/relu1/units", params=q).json()["total"] == 32
    unit = anon.get(f"/api/v1/runs/{rid}/layers/relu1/units/0", params=q).json()
    img = unit["topk"]["train"]["before"][0]
    plain = f"/api/v1/image-sets/{img['image_set_id']}/images/{img['image_id']}/thumb"
    assert anon.get(plain).status_code == 401
    assert anon.get(plain, params=q).status_code == 200
    assert anon.get(f"/api/v1/runs/{rid}/export.csv", params=q).status_code == 200
    # nothing else
    assert anon.get(f"/api/v1/runs/{other['run_id']}", params=q).status_code == 404
    assert anon.get("/api/v1/runs", params=q).status_code == 403
    assert anon.get("/api/v1/jobs", params=q).status_code == 403
    assert anon.get(f"/api/v1/jobs/{audit_run['id']}", params=q).status_code == 403
    assert anon.get("/api/v1/models", params=q).status_code == 403
    assert anon.get(f"/api/v1/image-sets/{stack.ids['val']}", params=q).status_code == 403
    assert anon.post("/api/v1/jobs", json=_audit(stack), params=q).status_code == 403
    assert anon.post(f"/api/v1/runs/{rid}/shares", params=q).status_code == 403
    # revocation
    assert stack.delete(f"/api/v1/shares/{share['token']}", who="bob").status_code == 404
    assert stack.delete(f"/api/v1/shares/{share['token']}", who="alice").status_code == 204
    assert anon.get(f"/api/v1/runs/{rid}", params=q).status_code == 404
    assert anon.get(f"/api/v1/runs/{rid}/layers/relu1/units/0", params=q).status_code == 404
    assert anon.get(plain, params=q).status_code == 404
    assert stack.get(f"/api/v1/runs/{rid}/shares", who="alice").json() == []
    stack.post(f"/api/v1/jobs/{other['id']}/cancel", who="alice")


# ---------------------------------------------------------------- models and checkpoints

def _demo_state():
    from fvaudit.engine.models.sources import load_model

    return load_model("fmnist-cnn").module.state_dict()


def _upload(stack, path, registry_name="fmnist-cnn", name="uploaded"):
    with open(path, "rb") as fh:
        return stack.post("/api/v1/models/upload", files={"file": (path.name, fh)},
                          data={"registry_name": registry_name, "name": name})


def test_upload_safetensors_and_weights_only_pt(stack, tmp_path):
    import torch
    from safetensors.torch import save_file

    state = _demo_state()
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    r = _upload(stack, st)
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["source"] == "upload" and m["registry_name"] == "fmnist-cnn"
    layers = stack.get(f"/api/v1/models/{m['id']}/layers").json()
    assert {"name": "relu3", "units": 128, "kind": "conv"}.items() <= {**next(l for l in layers if l["name"] == "relu3")}.items()
    pt = tmp_path / "w.pt"
    torch.save(state, pt)
    r = _upload(stack, pt)
    assert r.status_code == 201, r.text
    # both re-saved as the same safetensors content
    assert r.json()["weights"].split("sha256 ")[1] == m["weights"].split("sha256 ")[1]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_execute_code_is_refused(stack, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    zip_pt = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, zip_pt)
    raw_pt = tmp_path / "evil_raw.pth"
    raw_pt.write_bytes(pickle.dumps({"x": _Evil(marker)}, protocol=2))
    for f in (zip_pt, raw_pt):
        r = _upload(stack, f)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "file"]
        assert "refused" in r.json()["detail"][0]["msg"]
    assert not marker.exists(), "the checkpoint's pickle was executed"


def test_bad_checkpoints(stack, tmp_path):
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    r = _upload(stack, wrong)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    txt = tmp_path / "weights.txt"
    txt.write_text("hello")
    r = _upload(stack, txt)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    r = _upload(stack, wrong, registry_name="nonet")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "registry_name"]
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (4 * 2**20))          # the test stack allows 3 MiB
    assert _upload(stack, big).status_code == 413


def test_register_model_from_server_path(stack):
    from safetensors.torch import save_file

    p = stack.allowed / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in _demo_state().items()}, str(p))
    r = stack.post("/api/v1/models", {"name": "from path", "registry_name": "fmnist-cnn", "checkpoint_path": str(p)})
    assert r.status_code == 201 and r.json()["source"] == "path", r.text
    r = stack.post("/api/v1/models", {"name": "x", "registry_name": "fmnist-cnn", "checkpoint_path": "/etc/hosts"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "checkpoint_path"]


# ---------------------------------------------------------------- image sets

def _image_folder(root, classes=("cat", "dog"), n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    return root


def test_folder_image_set_thumbnails_and_samples(stack):
    folder = _image_folder(stack.allowed / "pets")
    s = stack.register_folder("pets", folder)
    assert s["status"] == "ready" and s["size"] == 6 and s["classes"] == ["cat", "dog"] and len(s["skipped"]) == 1
    samples = stack.get(f"/api/v1/image-sets/{s['id']}/classes/1/samples", params={"n": 2}).json()
    assert [x["label_name"] for x in samples] == ["dog", "dog"] and [x["image_id"] for x in samples] == [3, 4]
    t = httpx.get(stack.base + samples[0]["thumb_url"])
    assert t.status_code == 200 and t.headers["cache-control"] == "private, max-age=300"   # signed: short
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(t.content)).size == (80, 100)     # 16x20 upscaled ×5, nearest
    full = httpx.get(stack.base + samples[0]["full_url"])
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(full.content)).size == (16, 20)
    bad_sig = samples[0]["thumb_url"].replace("sig=", "sig=x")
    assert httpx.get(stack.base + bad_sig).status_code == 401
    assert stack.get(f"/api/v1/image-sets/{s['id']}/images/99/thumb").status_code == 404
    fm = stack.get(f"/api/v1/image-sets/{stack.ids['val']}/classes/8/samples", params={"n": 4}).json()
    assert len(fm) == 4 and all(x["label_name"] == "Bag" for x in fm)


def test_health_models_registry(stack):
    h = httpx.get(stack.base + "/api/v1/health").json()
    assert h == {**h, "status": "ok", "database": "ok", "broker": "ok", "mode": "service"}
    names = [m["name"] for m in stack.get("/api/v1/models/registry").json()]
    assert "fmnist-cnn" in names and "efficientnet-lite0" in names
    spec = httpx.get(stack.base + "/api/v1/openapi.json").json()
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}/events", "/api/v1/runs/{run_id}/layers/{layer}/units/{unit}",
                 "/api/v1/runs/{run_id}/export.csv", "/api/v1/shares/{token}", "/api/v1/models/upload"):
        assert path in spec["paths"], path
    examples = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert "audit" in examples


def test_a_limited_fashion_mnist_set_serves_the_images_its_ids_name(stack):
    """A limited set is a class-stratified sample: image id i is not image i of the whole
    split. The image endpoints opened the whole split, so galleries showed other images than
    the ones ranked (a T-shirt labelled "Sneaker"). Each served image must be the engine's."""
    import io

    import numpy as np
    from PIL import Image

    from fvaudit.engine.data.images import open_image_set

    s = stack.post("/api/v1/image-sets", {"name": "fifty", "source": "fashion-mnist:test", "limit": 50}).json()
    ds = open_image_set("fashion-mnist:test", limit=50)
    assert s["size"] == len(ds) == 50
    for cls in (0, 7):
        for sample in stack.get(f"/api/v1/image-sets/{s['id']}/classes/{cls}/samples", params={"n": 3}).json():
            i = sample["image_id"]
            assert int(ds.labels[i]) == cls == sample["label"]
            full = httpx.get(stack.base + sample["full_url"], timeout=30)
            assert full.status_code == 200
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(full.content))), ds.load_array(i))
