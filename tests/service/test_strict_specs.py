"""Issue 19, items 7 and 10: strict types on every spec field and request body, one rule for
fields an attack kind (or a detection without a reference) does not use, the failed image
set named as failed, request bodies limited in size before they are parsed, and the API
docs served from this server (they were blank offline: Swagger UI came from a CDN).

Each case here was accepted (201/202) or answered otherwise before the fix: ``limit: true``
and ``limit: "5"`` on an image set, ``decoy_class: "5"`` on a push-down, a sweep's
``decoy_class`` of 10^30 without push-up, an audit naming a failed set ("indexing"), and a
30 MB JSON body read whole before it was refused.
"""
from __future__ import annotations

import re
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from fvaudit.jobs.specs import AttackParams, attack_rules, unused_given


def _loc_msg(r: httpx.Response) -> tuple[list, str]:
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    return d["loc"], d["msg"]


def _audit(stack, **attack) -> dict:
    return {"kind": "audit", "spec": stack.audit_spec(**attack)}


# ---------------------------------------------------------------- strict request bodies

@pytest.mark.parametrize("value", [True, "5", 5.0, [5]])
def test_image_set_limit_must_be_an_integer(stack, value):
    r = stack.post("/api/v1/image-sets", {"name": "strict", "source": "fashion-mnist:test", "limit": value})
    loc, msg = _loc_msg(r)
    assert loc == ["body", "limit"] and "integer" in msg


def test_model_flags_must_be_booleans(stack):
    r = stack.post("/api/v1/models", {"name": "x", "registry_name": "fmnist-cnn", "pretrained": 1})
    loc, msg = _loc_msg(r)
    assert loc == ["body", "pretrained"] and "boolean" in msg


# ---------------------------------------------------------------- fields a kind does not use

@pytest.mark.parametrize("attack, field, words", [
    ({"decoy_class": "5"}, "decoy_class", "only push_up and push_up_slingshot use a decoy class (this attack: push_down)"),
    ({"decoy_class": 3}, "decoy_class", "only push_up and push_up_slingshot use a decoy class"),
    ({"decoy_ids": [1, 2]}, "decoy_ids", "only push_up and push_up_slingshot use decoy images"),
    ({"n_decoys": 50}, "n_decoys", "only push_up and push_up_slingshot draw decoys (this attack: push_down): leave n_decoys out "
                                   "(or at its default 100)"),
    ({"kind": "push_up", "decoy_class": 8, "attack_batch_size": 16}, "attack_batch_size",
     "only push_down draws batches of the attacked top-k (this attack: push_up)"),
    ({"kind": "finetune", "alpha_init": 0.3}, "alpha_init", "the finetune baseline has α = 0, no α controller"),
    ({"kind": "finetune", "score_norm": "none"}, "score_norm", "only push-down and push-up losses normalise unit scores"),
])
def test_a_field_the_attack_kind_does_not_use_is_refused(stack, attack, field, words):
    for kind, body in (("audit", _audit(stack, **attack)), ("attack", {"kind": "attack",
                                                                       "spec": stack.attack_spec(**attack)})):
        loc, msg = _loc_msg(stack.post("/api/v1/jobs", body))
        assert loc == ["body", "spec", "attack", field], (kind, msg)
        assert words in msg, (kind, msg)


def test_a_decoy_class_string_is_a_name_never_an_index(stack):
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", _audit(stack, kind="push_up", decoy_class="5")))
    assert loc == ["body", "spec", "attack", "decoy_class"]
    assert msg.startswith("unknown class '5' in ") and "(a class index is a number: 5, not '5')" in msg
    for bad, words in ((True, "a class index (a number) or a class name"), (10**30, "a class index lies in 0 .."),
                       (2.0, "a class index (a number) or a class name")):
        loc, msg = _loc_msg(stack.post("/api/v1/jobs", _audit(stack, kind="push_up", decoy_class=bad)))
        assert loc == ["body", "spec", "attack", "decoy_class"] and words in msg, msg


def test_the_rule_passes_defaults_spelled_out_and_resets_what_a_kind_ignores():
    """Pure: a spec that writes every default (a form, a stored spec) passes; the α = 0 control
    and a sweep's push-down get the fields they do not use back at their defaults."""
    full = AttackParams(layers=["relu3"]).model_dump(mode="json")
    assert unused_given(AttackParams.model_validate(full), attack_rules(["push_down"])) is None
    a = AttackParams(layers=["relu3"], alpha_init=0.3, attack_batch_size=16, score_norm="none")
    assert unused_given(a, attack_rules(["push_down"])) is None
    c = a.for_kind("finetune")
    assert (c.kind, c.alpha, c.alpha_init, c.attack_batch_size, c.score_norm) == ("finetune", 0.0, 0.1, 64,
                                                                                  "batch_mean")
    assert unused_given(c, attack_rules(["finetune"])) is None
    up = a.for_kind("push_up", decoy_class=8)
    assert (up.decoy_class, up.attack_batch_size, up.alpha_init) == (8, 64, 0.3)
    assert unused_given(up, attack_rules(["push_up"])) is None
    assert AttackParams.model_validate(c.model_dump(mode="json")) == c      # what the worker re-reads


def _sweep(stack, **kw) -> dict:
    spec = {"name": "strict sweep", "train_set_id": stack.ids["train"], "val_set_id": stack.ids["val"],
            "base": {"model_id": stack.ids["model"], "attack": {"layers": ["relu1"], "steps": 10}},
            "attacks": ["push_down"], "k_clip": 5, "embedder": "efficientnet-lite0", **kw}
    return {"kind": "sweep", "spec": spec}


def test_sweep_decoy_class_without_push_up_is_refused_and_range_checked(stack):
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", _sweep(stack, decoy_class=10**30)))
    assert loc == ["body", "spec", "decoy_class"] and "a class index lies in 0 .. 2147483647" in msg
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", _sweep(stack, decoy_class=3)))
    assert loc == ["body", "spec", "decoy_class"]
    assert msg == "only push_up and push_up_slingshot use a decoy class (this sweep: push_down): leave decoy_class out"
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", _sweep(stack, attacks=["push_down", "push_up"],
                                                          decoy_class=10)))
    assert loc == ["body", "spec", "decoy_class"] and "class index 10 out of range" in msg
    body = _sweep(stack)
    body["spec"]["base"]["attack"]["n_decoys"] = 50
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", body))
    assert loc == ["body", "spec", "base", "attack", "n_decoys"] and "only push_up and push_up_slingshot draw decoys (this sweep" in msg
    body = _sweep(stack)
    body["spec"]["base"]["attack"]["kind"] = "finetune"
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", body))
    assert loc == ["body", "spec", "base", "attack", "kind"] and "list them in attacks" in msg


def test_detection_without_a_reference_refuses_its_clip_settings(stack):
    spec = {"suspect": {"model_id": stack.ids["model"]}, "population": [{"model_id": stack.ids["model"]}] * 2,
            "image_set_id": stack.ids["val"], "layers": ["relu1"], "k": 10}
    for field, value in (("k_clip", 3), ("embedder", "efficientnet-lite0")):
        loc, msg = _loc_msg(stack.post("/api/v1/jobs", {"kind": "detect", "spec": {**spec, field: value}}))
        assert loc == ["body", "spec", field] and msg.startswith("without a reference no CLIP-δ is measured"), msg


def test_an_audit_naming_a_failed_image_set_says_it_failed_and_why(stack):
    folder = stack.allowed / "no-images"
    (folder / "cats").mkdir(parents=True, exist_ok=True)
    (folder / "cats" / "notes.txt").write_text("not an image")
    r = stack.post("/api/v1/image-sets", {"name": "no images", "source": str(folder)})
    assert r.status_code == 202, r.text
    assert stack.wait_job(r.json()["job"]["id"])["status"] == "failed"
    loc, msg = _loc_msg(stack.post("/api/v1/jobs", {"kind": "audit",
                                                    "spec": {**stack.audit_spec(), "val_set_id": r.json()["id"]}}))
    assert loc == ["body", "spec", "val_set_id"]
    assert msg.startswith(f"image set {r.json()['id']} (no images) failed to register and cannot be used: ")
    assert "no readable images" in msg and "indexing" not in msg


# ---------------------------------------------------------------- body limit

def _raw(stack, head: str) -> socket.socket:
    u = urlsplit(stack.base)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall(head.encode())
    return s


def _status_and_body(s: socket.socket) -> tuple[int, str]:
    data = b""
    s.settimeout(30)
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _head(stack, path: str, extra: str) -> str:
    token = stack.tokens["admin"]
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n")


def test_a_body_declared_too_large_is_refused_before_a_byte_is_read(stack):
    """30 MB declared, not one byte sent: the answer can only come from the declared length."""
    s = _raw(stack, _head(stack, "/api/v1/image-sets", f"Content-Length: {30 * 2**20}\r\n"))
    with s:
        status, body = _status_and_body(s)
    assert status == 413 and "request body larger than 2097152 bytes (FVAUDIT_MAX_BODY_BYTES)" in body


def test_a_chunked_body_is_refused_as_it_streams_past_the_limit(stack):
    """No length, 64 KiB chunks, never the final chunk: a server that waited for the whole body to
    parse it could never answer; this one answers 413 once the limit is crossed."""
    s = _raw(stack, _head(stack, "/api/v1/jobs", "Transfer-Encoding: chunked\r\n"))
    piece = b" " * 65536
    sent = 0
    with s:
        deadline = time.monotonic() + 60
        while sent < 64 * 2**20 and time.monotonic() < deadline:
            if select.select([s], [], [], 0)[0]:
                break                                  # the server answered mid-body
            try:
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except OSError:
                break                                  # it closed the connection after answering
            sent += len(piece)
        status, body = _status_and_body(s)
    assert status == 413 and "FVAUDIT_MAX_BODY_BYTES" in body, body
    assert 2 * 2**20 < sent < 64 * 2**20


def test_the_upload_route_keeps_its_own_larger_limit(stack, tmp_path):
    """2.5 MiB is above the JSON limit but below the test stack's 3 MiB upload limit: the upload
    route reads it and judges the file (not a checkpoint: 422), where JSON routes say 413."""
    f = tmp_path / "junk.safetensors"
    f.write_bytes(b"\1" * (5 * 2**19))
    with f.open("rb") as fh:
        r = httpx.post(stack.base + "/api/v1/models/upload", headers=stack.h(), timeout=60,
                       files={"file": (f.name, fh)}, data={"registry_name": "fmnist-cnn", "name": "junk"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"], r.text
    r = httpx.post(stack.base + "/api/v1/jobs", headers={**stack.h(), "Content-Type": "application/json"},
                   content=b" " * (5 * 2**19) + b"{}", timeout=60)
    assert r.status_code == 413, r.text


# ---------------------------------------------------------------- docs offline

def test_the_docs_pages_load_every_asset_from_this_server(stack):
    for page in ("/api/v1/docs", "/api/v1/redoc"):
        r = httpx.get(stack.base + page, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), page
        assert not re.search(r"https?://", r.text), (page, re.findall(r"https?://[^\s\"'<>]+", r.text))
        urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", r.text)
        urls = [a or b for a, b in urls]
        assert "/api/v1/openapi.json" in urls, urls
        assets = [u for u in urls if u.startswith("/api/v1/docs/assets/")]
        assert len(assets) == (3 if page.endswith("docs") else 2), urls
        for u in urls:
            got = httpx.get(stack.base + u, timeout=30)
            assert got.status_code == 200 and len(got.content) > 0, (u, got.status_code)
    js = httpx.get(stack.base + "/api/v1/docs/assets/swagger-ui-bundle.js", timeout=30)
    assert js.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert len(js.content) > 500_000                   # the real bundle, not a stub
