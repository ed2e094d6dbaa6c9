"""Gradient Slingshots through the service (issue 21, SPEC §8.1): target images are uploaded and
checked (422s naming body.file), an attack spec's targets are checked against the database, and
a Slingshots audit runs end to end on Postgres + Redis + Celery: the unit page shows the target,
the synthetic images before and after and the measures against the target."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(w: int, h: int) -> bytes:
    """A valid PNG header announcing w×h pixels (the data is a few bytes: never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _upload(stack, name: str, data: bytes, who: str = "admin"):
    return stack.post("/api/v1/target-images", files={"file": (name, data)}, who=who)


def _detail(r) -> tuple[list, str]:
    d = r.json()["detail"][0]
    return d["loc"], d["msg"]


@pytest.mark.parametrize("name,data,why", [
    ("empty.png", b"", "empty file"),
    ("text.png", b"hello, not an image", "not an image: upload a PNG or JPEG"),
    ("a.gif", None, "unsupported image format GIF"),
    ("bomb.png", _bomb_png(20_000, 20_000), "decompression bomb guard"),
    ("truncated.png", _png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))[:2000],
     "cannot decode the PNG image"),
])
def test_bad_target_uploads_get_a_422_naming_the_file(stack, name, data, why):
    if data is None:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="GIF")
        data = buf.getvalue()
    r = _upload(stack, name, data)
    assert r.status_code == 422, r.text
    loc, msg = _detail(r)
    assert loc == ["body", "file"] and why in msg, msg


def test_too_large_target_upload_is_refused_before_decoding(stack):
    r = _upload(stack, "big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (8 * 2**20 + 1))
    assert r.status_code == 422 and _detail(r) == (["body", "file"], "file larger than 8 MiB")


def test_a_target_upload_is_stored_as_png_and_read_back(stack):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    r = _upload(stack, "photo.jpg", buf.getvalue())
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["width"], out["height"], out["mode"], out["format"]) == (20, 30, "RGB", "JPEG")
    img = stack.get(out["url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (20, 30)
    assert stack.get(out["url"], who=None).status_code in (401, 404)
    # a PNG the store already holds under another kind (a thumbnail saved from the dashboard) is a
    # target of its own: the store is content-addressed, and its kind must not leak into the upload
    thumb = stack.get(f"/api/v1/image-sets/{stack.ids['train']}/images/0/thumb")
    assert thumb.status_code == 200
    again = _upload(stack, "thumb.png", thumb.content)
    assert again.status_code == 201, again.text
    assert stack.get(again.json()["url"]).status_code == 200


def test_attack_targets_are_checked_against_the_database(stack):
    base = stack.attack_spec(kind="slingshot", layers=["relu3"], units=[0, 1, 2], steps=2)
    cases = [
        ({"target_images": None}, ["attack", "target_images"], "slingshot needs a target image"),
        ({"target_images": [{"artifact_id": 999999}]}, ["attack", "target_images", 0, "artifact_id"],
         "no uploaded target image 999999"),
        ({"target_images": [{"image_set_id": stack.ids["train"], "image_id": 10**9}]},
         ["attack", "target_images", 0, "image_id"], "out of range"),
        ({"target_images": [{"image_set_id": stack.ids["train"], "image_id": 1}] * 2}, ["attack", "target_images"],
         "one per attacked unit (3), got 2"),
        ({"target_images": [{"image_set_id": stack.ids["train"]}]}, ["attack", "target_images", 0],
         "image_set_id and image_id go together"),
        ({"kind": "push_down", "target_images": [{"image_set_id": stack.ids["train"], "image_id": 1}]},
         ["attack", "target_images"], "only Slingshots kinds use a target image"),
    ]
    for update, loc, why in cases:
        spec = {**base, "attack": {**base["attack"], **update}}
        r = stack.post("/api/v1/jobs", {"kind": "attack", "spec": spec})
        assert r.status_code == 422, (update, r.text)
        got = r.json()["detail"][0]
        assert got["loc"][-len(loc):] == loc and why in got["msg"], (update, got)


def test_slingshot_audit_end_to_end_shows_target_and_measures(stack):
    spec = stack.audit_spec(kind="slingshot", layers=["relu3"], units=[0, 1, 2], steps=6, eval_every=3,
                            checkpoint_every=3, tunnel_batch=2, visualize=True,
                            target_images=[{"image_set_id": stack.ids["train"], "image_id": 0}])
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=900)
    assert done["status"] == "succeeded", done
    attack = stack.job(done["children"][1])["result"]
    assert attack["kind"] == "slingshot"
    run = stack.get(f"/api/v1/runs/{done['run_id']}").json()
    agg = run["fv_target"]["relu3"]
    live = attack["attacked"]["relu3"]              # a dead unit (SPEC §1) is left out, its target with it
    assert len(live) >= 2 and set(live) | set(attack["dead"]["relu3"]) == {0, 1, 2}
    assert set(attack["targets"]["units"]) == {str(u) for u in live}
    assert agg["units"] == len(live) and 0.0 <= agg["moved_share"] <= 1.0
    for m in ("ssim_target_after", "ssim_target_before", "mse_target_after", "cos_target_after", "auroc_before",
              "auroc_after", "agreement_after", "agreement_before"):
        assert agg[m] is not None, (m, agg)
    assert agg["cross_check"] in ("agree", "disagree")
    u = stack.get(f"/api/v1/runs/{done['run_id']}/layers/relu3/units/{live[0]}").json()
    fv = u["fv_target"]
    assert fv["target_url"].endswith(f"/runs/{done['run_id']}/layers/relu3/units/{live[0]}/target")
    assert fv["moved"] in (True, False) and fv["moved_by"] == "embedder cosine"
    assert -1.0 <= fv["measures"]["ssim_target_after"] <= 1.0 and 0.0 <= fv["measures"]["auroc_after"] <= 1.0
    assert u["synthetic"]["before"] and u["synthetic"]["after"] and u["topk"]["val"]["before"]
    img = stack.get(fv["target_url"])
    assert img.status_code == 200
    # the target is the training image asked for, at the model's input size
    train0 = stack.get(f"/api/v1/image-sets/{stack.ids['train']}/images/0/full")
    assert train0.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(img.content)).convert("L")),
                          np.asarray(Image.open(io.BytesIO(train0.content)).convert("L")))
    # a unit the run did not aim at has no target
    assert stack.get(f"/api/v1/runs/{done['run_id']}/layers/relu3/units/5/target").status_code == 404
    assert stack.get(f"/api/v1/runs/{done['run_id']}/layers/relu3/units/5").json()["fv_target"] is None


def test_a_sweep_over_gamma_runs_slingshots_at_each_value(stack):
    """Issue 21: a sweep over γ (or α, or the units) works through the existing sweep: each point is a
    Slingshots audit with its own γ and the base's target."""
    target = [{"image_set_id": stack.ids["train"], "image_id": 0}]
    attack = {"layers": ["relu3"], "units": [0, 2], "steps": 3, "batch_size": 32, "eval_every": 3, "eval_size": 200,
              "lr": 1e-3, "checkpoint_every": 3, "tunnel_batch": 2, "target_images": target}
    spec = {"name": "gamma sweep", "train_set_id": stack.ids["train"], "val_set_id": stack.ids["val"],
            "base": {"model_id": stack.ids["model"], "attack": attack},
            "grid": [{"field": "attack.gamma", "values": [10.0, 1000.0]}], "baseline": False,
            "attacks": ["slingshot"], "k_clip": 5, "embedder": "none"}
    bad = {**spec, "attacks": ["push_down"]}
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": bad})
    assert r.status_code == 422 and "only Slingshots kinds" in r.text, r.text
    r = stack.post("/api/v1/jobs", {"kind": "sweep", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=900)
    assert done["status"] == "succeeded", done
    attacks = [stack.job(k) for k in done["children"] if stack.job(k)["kind"] == "attack"]
    assert sorted(a["spec"]["attack"]["gamma"] for a in attacks) == [10.0, 1000.0]
    assert all(a["spec"]["attack"]["kind"] == "slingshot" and a["result"]["targets"]["units"] for a in attacks)
