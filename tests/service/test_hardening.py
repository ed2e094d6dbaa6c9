"""Hostile input against the real stack (issue 13, items 1, 2, 6, 7, 8, 9).

Each test names the item it covers; each failed on the code before the fix:
symlinks out of the allowed roots were indexed and served (1), NaN/Infinity gave a 500
(2), image URLs outlived their share link (6), tokens reached the access log (7), a 422
echoed 100 KB and an upload error named the server's temp path, failure reasons kept
ANSI escapes (8), and service mode started with no secret key (9).
"""
from __future__ import annotations

import io
import signal
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from svc import Proc, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, value: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path.read_bytes()


def _raw_post(stack, path: str, body: bytes, who: str = "admin") -> httpx.Response:
    return httpx.post(stack.base + path, content=body, timeout=60,
                      headers={**stack.h(who), "Content-Type": "application/json"})


# ---------------------------------------------------------------- 1. symlinks

def test_symlinks_leaving_the_allowed_roots_are_skipped_at_indexing_and_refused_at_serving(stack, tmp_path):
    """Item 1: a symlinked file, a symlinked class folder and a link to /etc/passwd under an
    allowed root are skipped with the reason; a link inside the roots is kept; a file
    swapped for an outside link after indexing is not served."""
    outside = tmp_path / "outside"            # not under stack.allowed
    secret = _png(outside / "cat" / "secret.png", 200)
    _png(outside / "dog" / "d1.png", 50)
    root = stack.allowed / f"links-{uuid.uuid4().hex[:6]}"
    a1 = _png(root / "a" / "a1.png", 10)
    _png(root / "a" / "a2.png", 20)
    (root / "a" / "link-out.png").symlink_to(outside / "cat" / "secret.png")
    (root / "a" / "passwd.png").symlink_to("/etc/passwd")
    (root / "a" / "link-in.png").symlink_to(root / "a" / "a1.png")       # stays inside: kept
    (root / "linked-class").symlink_to(outside / "dog", target_is_directory=True)

    s = stack.register_folder("symlinks", root)
    assert s["classes"] == ["a"]
    assert s["size"] == 3                      # a1, a2, link-in (sorted: a1, a2, link-in)
    reasons = {Path(x["path"]).name: x["reason"] for x in s["skipped"]}
    for name in ("link-out.png", "passwd.png", "linked-class"):
        assert reasons.get(name) == "symlink to a path outside the allowed roots", reasons

    samples = stack.get(f"/api/v1/image-sets/{s['id']}/classes/0/samples?n=10").json()
    assert [x["image_id"] for x in samples] == [0, 1, 2]
    full0 = httpx.get(stack.base + samples[0]["full_url"], timeout=30)
    assert full0.status_code == 200 and full0.content == a1
    # after indexing, a2.png becomes a link to the secret: neither full nor thumb serves it
    (root / "a" / "a2.png").unlink()
    (root / "a" / "a2.png").symlink_to(outside / "cat" / "secret.png")
    for url in (samples[1]["full_url"], samples[1]["thumb_url"]):
        got = httpx.get(stack.base + url, timeout=30)
        assert got.status_code == 404, (url, got.status_code)
        assert got.content != secret


# ---------------------------------------------------------------- 2. NaN / Infinity

NON_FINITE = [
    ("image set limit Infinity", "/api/v1/image-sets",
     b'{"name": "x", "source": "fashion-mnist:test", "limit": Infinity}', ["body", "limit"], "Infinity"),
    ("image set limit 1e999", "/api/v1/image-sets",
     b'{"name": "x", "source": "fashion-mnist:test", "limit": 1e999}', ["body", "limit"], "1e999"),
    ("steps Infinity", "/api/v1/jobs",
     b'{"kind": "audit", "spec": {"attack": {"kind": "push_down", "steps": Infinity}}}',
     ["body", "spec", "attack", "steps"], "Infinity"),
    ("lr NaN", "/api/v1/jobs", b'{"kind": "audit", "spec": {"attack": {"kind": "push_down", "lr": NaN}}}',
     ["body", "spec", "attack", "lr"], "NaN"),
    ("k -Infinity in a list", "/api/v1/jobs",
     b'{"kind": "scan", "spec": {"layers": ["relu1"], "k": -Infinity, "image_set_ids": [1, NaN]}}',
     ["body", "spec", "k"], "-Infinity"),
]


@pytest.mark.parametrize("case,path,body,loc,text", NON_FINITE, ids=[c[0] for c in NON_FINITE])
def test_non_finite_numbers_are_422_naming_the_field(stack, case, path, body, loc, text):
    """Item 2: NaN, ±Infinity and overflowing floats anywhere in a JSON body → 422 naming
    the field (was a 500: the 422 echoed ``inf`` and could not be serialised)."""
    r = _raw_post(stack, path, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    hit = [e for e in detail if e["loc"] == loc]
    assert hit, detail
    assert hit[0]["type"] == "finite_number" and hit[0]["input"] == text
    assert "finite" in hit[0]["msg"]


def test_every_non_finite_field_is_named_and_query_inf_is_serialisable(stack):
    r = _raw_post(stack, "/api/v1/jobs",
                  b'{"kind": "scan", "spec": {"layers": ["relu1"], "k": -Infinity, "image_set_ids": [1, NaN]}}')
    assert r.status_code == 422
    assert sorted(map(tuple, (e["loc"] for e in r.json()["detail"]))) == [
        ("body", "spec", "image_set_ids", 1), ("body", "spec", "k")]
    # a query parameter: pydantic's own 422, whose echo must serialise too
    q = stack.get("/api/v1/runs?limit=inf")
    assert q.status_code == 422 and q.json()["detail"][0]["loc"] == ["query", "limit"]


# ---------------------------------------------------------------- 6. signed image URLs

@pytest.fixture
def shared_run(db_env):
    """A finished run of alice's (synthetic rows, shaped like a metrics job's) and a share link."""
    from sqlalchemy import select

    from fvaudit.db.tables import ImageSet, User
    from fvaudit.db.seed import synthetic_run
    from fvaudit.db.session import session_scope

    stack = db_env
    with session_scope() as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
        run = synthetic_run(s, alice.id, stack.ids["model"], s.get(ImageSet, stack.ids["train"]),
                            s.get(ImageSet, stack.ids["val"]), {"relu1": 3}, name="shared")
        run_id = run.id
    r = stack.post(f"/api/v1/runs/{run_id}/shares", who="alice")
    assert r.status_code == 201, r.text
    return stack, run_id, r.json()["token"]


def test_image_urls_handed_out_through_a_share_link_die_with_it(shared_run):
    """Item 6: revoking a share link kills the image URLs it handed out (they used to keep working)."""
    stack, run_id, token = shared_run
    d = stack.get(f"/api/v1/runs/{run_id}/layers/relu1/units/0?share={token}", who=None)
    assert d.status_code == 200, d.text
    via_share = d.json()["topk"]["val"]["before"][0]
    own = stack.get(f"/api/v1/runs/{run_id}/layers/relu1/units/0", who="alice").json()["topk"]["val"]["before"][0]
    for url in (via_share["thumb_url"], via_share["full_url"], own["thumb_url"]):
        assert httpx.get(stack.base + url, timeout=30).status_code == 200, url
    assert stack.delete(f"/api/v1/shares/{token}", who="alice").status_code == 204
    for url in (via_share["thumb_url"], via_share["full_url"]):
        assert httpx.get(stack.base + url, timeout=30).status_code in (401, 404), url
    # the owner's own URLs (no share link) are not affected
    assert httpx.get(stack.base + own["thumb_url"], timeout=30).status_code == 200


def test_image_cache_lifetime_never_outlives_the_url_or_a_revoked_share_link(shared_run):
    """Revoked share links: a browser must not keep showing an image it cached through one.
    Images used to be sent with ``max-age=31536000, immutable``: a cached copy outlived both
    the URL's expiry and the share link. Now a signed URL may be reused for at most 60 s
    (through a share link) or 300 s, never past its expiry, and a request allowed by a token
    or a share header is revalidated every time (ETag → 304, which runs the checks again)."""
    from fvaudit.api.images import image_cache_control
    from fvaudit.api.security import ImageSig

    assert image_cache_control(ImageSig(expires=1000, share_id=None, mac="m"), now=970) == "private, max-age=30"
    assert image_cache_control(ImageSig(expires=1000, share_id=None, mac="m"), now=0) == "private, max-age=300"
    assert image_cache_control(ImageSig(expires=1000, share_id=7, mac="m"), now=0) == "private, max-age=60"
    assert image_cache_control(ImageSig(expires=1000, share_id=7, mac="m"), now=990) == "private, max-age=10"
    assert image_cache_control(None) == "private, no-cache"

    stack, run_id, token = shared_run
    via_share = stack.get(f"/api/v1/runs/{run_id}/layers/relu1/units/0?share={token}", who=None).json()
    own = stack.get(f"/api/v1/runs/{run_id}/layers/relu1/units/0", who="alice").json()
    shared_img, own_img = via_share["topk"]["val"]["before"][0], own["topk"]["val"]["before"][0]
    for url in (shared_img["thumb_url"], shared_img["full_url"]):
        r = httpx.get(stack.base + url, timeout=30)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, max-age=60", url
    r = httpx.get(stack.base + own_img["thumb_url"], timeout=30)
    assert r.headers["cache-control"] == "private, max-age=300"
    # no signature: allowed by the API token on each request, so revalidated each time
    unsigned = own_img["thumb_url"].split("?")[0]
    r = httpx.get(stack.base + unsigned, headers=stack.h("alice"), timeout=30)
    assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"
    again = httpx.get(stack.base + unsigned, timeout=30, headers={**stack.h("alice"), "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    # after revocation, the revalidation of the shared URL is refused
    assert stack.delete(f"/api/v1/shares/{token}", who="alice").status_code == 204
    gone = httpx.get(stack.base + shared_img["thumb_url"], timeout=30, headers={"If-None-Match": r.headers["etag"]})
    assert gone.status_code in (401, 404)


def test_image_urls_expire_and_cannot_be_extended(stack):
    """Item 6: a signature carries its expiry inside the MAC: past → refused; edited → refused."""
    from fvaudit.api.security import SIG_BUCKET_SECONDS, sign_image

    key = stack.env["FVAUDIT_SECRET_KEY"].encode()
    sid = stack.ids["val"]
    url = stack.get(f"/api/v1/image-sets/{sid}/classes/0/samples?n=1").json()[0]["thumb_url"]
    image_id = int(url.split("/images/")[1].split("/")[0])
    sig = url.split("sig=")[1]
    expires = int(sig.split(".")[0])
    now = time.time()
    assert now + 6 * 3600 <= expires <= now + 6 * 3600 + SIG_BUCKET_SECONDS + 5   # FVAUDIT_IMAGE_URL_TTL default
    base = f"{stack.base}/api/v1/image-sets/{sid}/images/{image_id}/thumb?sig="
    assert httpx.get(base + sig, timeout=30).status_code == 200
    assert httpx.get(base + sign_image(key, sid, image_id, int(now) - 1), timeout=30).status_code == 401
    extended = f"{expires + 10**6}." + sig.split(".", 1)[1]
    assert httpx.get(base + extended, timeout=30).status_code == 401
    assert httpx.get(base + sign_image(key, sid, image_id + 1, expires), timeout=30).status_code == 401


# ---------------------------------------------------------------- 8. echoes, paths, escapes

def test_a_422_echo_is_truncated(stack):
    """Item 8: a 100 KB name comes back cut to 200 characters, marked with its length."""
    r = stack.post("/api/v1/image-sets", {"name": "x" * 100_000, "source": "fashion-mnist:test"})
    assert r.status_code == 422
    assert len(r.content) < 2000, len(r.content)
    e = r.json()["detail"][0]
    assert e["loc"] == ["body", "name"]
    assert e["input"] == "x" * 200 + "… (100000 characters)"


def test_an_upload_error_names_no_server_path(stack):
    """Item 8: a checkpoint that does not fit is refused without naming the temp dir it was written to."""
    import torch
    from safetensors.torch import save as save_st

    data = save_st({"not.a.layer": torch.zeros(3)})
    r = httpx.post(stack.base + "/api/v1/models/upload", headers=stack.h("alice"), timeout=120,
                   data={"name": "bad fit", "registry_name": "fmnist-cnn"},
                   files={"file": ("mine.safetensors", io.BytesIO(data), "application/octet-stream")})
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert "checkpoint mine.safetensors does not fit the architecture" in msg, msg   # the upload's own name
    assert stack.env["FVAUDIT_DATA_DIR"] not in r.text and "/tmp" not in r.text, msg


def test_stored_failure_reasons_have_no_escape_codes(db_env):
    """Item 8: a failure reason with ANSI colour codes and control characters is stored clean."""
    from sqlalchemy import select

    from fvaudit.db.tables import Job, User
    from fvaudit.db.session import session_scope
    from fvaudit.jobs.lifecycle import finish

    stack = db_env
    with session_scope() as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
        job = Job(kind="scan", spec={}, status="running", owner_id=alice.id)
        s.add(job)
        s.flush()
        finish(s, job, "failed", "\x1b[1;31mRuntimeError\x1b[0m: bad \x1b]0;title\x07input\x00 at "
                                 f"{stack.env['FVAUDIT_DATA_DIR']}/work/job-1/state.safetensors")
        jid = job.id
    got = stack.job(jid, who="alice")
    assert got["status"] == "failed"
    assert got["error"] == "RuntimeError: bad input at state.safetensors"


# ---------------------------------------------------------------- 7 and 9: the API process

def _api(stack, tmp_path: Path, name: str, env_over: dict, level: str = "info") -> tuple[Proc, str]:
    """A second API process on the stack's database (its own port and log file)."""
    import sys

    port = free_port()
    env = {k: v for k, v in {**stack.env, **env_over}.items() if v is not None}
    proc = Proc(name, [sys.executable, "-m", "fvaudit.cli", "serve", "--port", str(port), "--no-upgrade",
                       "--log-level", level], env, tmp_path / f"{name}.log").start()
    return proc, f"http://127.0.0.1:{port}"


def test_app_log_records_are_redacted_whatever_logger_they_come_from():
    """Item 7: the filter sits on the handlers, so a logger created after it was installed
    (a lazily imported module) is covered too, and uvicorn's access-record tuple keeps its shape."""
    import logging

    from fvaudit.api.security import RedactSecrets, install_log_redaction

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger().addHandler(handler)
    try:
        install_log_redaction()
        late = logging.getLogger(f"fvaudit.late.{uuid.uuid4().hex[:6]}")
        late.warning("retry %s with %s", "/api/v1/jobs/1/events?token=fva_" + "a" * 43, "Bearer fva_" + "b" * 43)
    finally:
        logging.getLogger().removeHandler(handler)
    assert buf.getvalue().strip() == "retry /api/v1/jobs/1/events?token=[redacted] with Bearer [redacted]"
    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5", "GET", "/?share=" + "c" * 43, "1.1", 200), None)
    RedactSecrets().filter(rec)
    assert rec.args == ("127.0.0.1:5", "GET", "/?share=[redacted]", "1.1", 200)


def test_tokens_never_reach_the_logs(stack, tmp_path):
    """Item 7: ``?token=`` (SSE), ``?share=`` and bearer tokens are redacted from uvicorn's
    access log and the app's log lines."""
    proc, base = _api(stack, tmp_path, "api-logs", {})
    admin = stack.tokens["admin"]
    share = "S" * 43
    try:
        wait_until(lambda: httpx.get(base + "/api/v1/health", timeout=2).status_code == 200, 60,
                   "the second API (log: " + proc.tail() + ")")
        httpx.get(f"{base}/api/v1/jobs/999999/events?token={admin}", timeout=10)
        httpx.get(f"{base}/?token={admin}", timeout=10)
        httpx.get(f"{base}/api/v1/runs/1?share={share}", timeout=10)
        httpx.get(f"{base}/api/v1/health?x=1&token={admin}&y=2", timeout=10)
    finally:
        proc.stop(signal.SIGTERM)
    log = proc.log.read_text(errors="replace")
    assert "/api/v1/jobs/999999/events?token=[redacted]" in log, log[-3000:]
    assert "/?token=[redacted]" in log and "share=[redacted]" in log
    assert "token=[redacted]&y=2" in log
    assert admin not in log and share not in log


def test_service_mode_refuses_to_start_without_a_secret_key(stack, tmp_path):
    """Item 9: no FVAUDIT_SECRET_KEY (or the old compose placeholder) in service mode → the
    API exits with a message saying what to set."""
    for name, key, says in (("api-nokey", None, "FVAUDIT_SECRET_KEY is not set"),
                            ("api-weakkey", "change-me-in-production", "FVAUDIT_SECRET_KEY is too weak")):
        proc, base = _api(stack, tmp_path, name, {"FVAUDIT_SECRET_KEY": key})
        try:
            wait_until(lambda: not proc.alive(), 60, f"{name} to exit")
        finally:
            proc.stop(signal.SIGKILL)
        assert proc.proc.returncode != 0
        log = proc.log.read_text(errors="replace")
        assert says in log and "openssl rand -hex 32" in log, log[-3000:]


def test_compose_has_no_fallback_secret_key():
    """Item 9: docker-compose.yml requires FVAUDIT_SECRET_KEY (``${VAR:?message}``), no default."""
    import yaml

    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-fvaudit-env"]
    value = env["FVAUDIT_SECRET_KEY"]
    assert value.startswith("${FVAUDIT_SECRET_KEY:?") and ":-" not in value, value


# ---------------------------------------------------------------- 20. keep-alive

def test_an_idle_keep_alive_connection_outlives_the_clients_pool_expiry(stack):
    """Item 20: the soak's resets were requests sent into a connection uvicorn was closing
    after 5 s idle, exactly when httpx's pool (5 s expiry) still reused it. The server now
    keeps idle connections for FVAUDIT_KEEP_ALIVE_SECONDS (75 s): a request on the same
    socket after 6 s idle is answered."""
    import socket

    host, port = "127.0.0.1", stack.port
    req = f"GET /api/v1/health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    def response(sock) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += sock.recv(65536)
        return head

    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(req)
        assert response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6)
        sock.sendall(req)
        assert response(sock).startswith(b"HTTP/1.1 200")


# ---------------------------------------------------------------- 19. timm through the API

def test_timm_models_register_by_name_random_init_or_a_clear_cache_error(stack):
    """Item 19: the registry lists timm models; ``timm:<name>`` registers with random
    weights when asked, with its layer list (stages as conv layers); asking for pretrained
    weights offline is a 422 naming the Hugging Face cache path."""
    reg = stack.get("/api/v1/models/registry").json()
    assert {"name": "timm:convnext_atto", "source": "timm", "offline": False,
            "description": "ConvNeXt-Atto (3.7 M params), conv stages 0-3; weights from the Hugging Face cache (timm)"
            } in reg
    r = stack.post("/api/v1/models", {"name": "convnext atto (random)", "registry_name": "timm:convnext_atto",
                                      "pretrained": False})
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["weights"] == "random-init" and m["input_shape"] == [3, 224, 224] and m["n_classes"] == 1000
    layers = {l["name"]: l for l in stack.get(f"/api/v1/models/{m['id']}/layers").json()}
    assert layers["stages.3"]["kind"] == "conv" and layers["stages.3"]["units"] == 320
    assert layers["stages.3"]["label"] == "stage 3 (stride 32)"
    offline = stack.post("/api/v1/models", {"name": "convnext atto", "registry_name": "timm:convnext_atto"})
    assert offline.status_code == 422, offline.text
    e = offline.json()["detail"][0]
    assert e["loc"] == ["body", "registry_name"]
    assert "models--timm--convnext_atto.d2_in1k (hub id timm/convnext_atto.d2_in1k)" in e["msg"]
    assert "pretrained=false" in e["msg"]
