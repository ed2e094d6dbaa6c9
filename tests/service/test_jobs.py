"""The job system end to end: chain through the HTTP API, SSE, cancel, SIGKILL, Redis restart."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest



def read_sse(stack, jid: int, out: list, who: str = "admin", timeout: float = 300) -> None:
    """Collect (event, data) pairs from the job's SSE stream until it ends."""
    with httpx.stream("GET", f"{stack.base}/api/v1/jobs/{jid}/events", params={"token": stack.tokens[who]},
                      timeout=httpx.Timeout(timeout, read=timeout)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                out.append((event, json.loads(line.split(":", 1)[1])))


def restart_without_persistence(redis_server) -> None:
    """Restart Redis so that everything in it is lost (a fresh process, no RDB/AOF).

    (Not "the queue is empty afterwards": the reaper may already have re-sent wake-ups.)"""
    c = redis_server.client()
    assert c.config_get("appendonly")["appendonly"] == "no" and c.config_get("save")["save"] == ""
    before = c.info("server")["run_id"]
    redis_server.restart()
    assert redis_server.client().info("server")["run_id"] != before


def test_audit_chain_through_http_with_sse(stack):
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": stack.audit_spec(kind="push_down")})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "audit" and job["status"] == "queued" and len(job["children"]) == 5
    assert job["label"] == "audit" and job["step_key"] is None
    events: list = []
    t = threading.Thread(target=read_sse, args=(stack, job["id"], events), daemon=True)
    t.start()
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    t.join(60)
    assert not t.is_alive(), "the SSE stream did not end after the job ended"
    kinds = [e for e, _ in events]
    assert kinds[0] == "status"
    assert "progress" in kinds and "log" in kinds
    assert events[-1][0] == "status" and events[-1][1]["status"] == "succeeded"
    stages = {d.get("kind") for e, d in events if e == "progress"}
    assert {"scan", "attack", "metrics"} <= stages, stages
    assert any(d.get("l_attack") is not None for e, d in events if e == "progress")

    children = [stack.job(c) for c in done["children"]]
    assert [c["kind"] for c in children] == ["scan", "attack", "scan", "scan", "metrics"]
    assert [c["step_key"] for c in children] == ["scan_init", "attack", "scan_selected", "scan_final", "metrics"]
    assert [c["label"] for c in children] == ["scan θ_init", "attack", "scan θ_selected", "scan θ_final", "metrics"]
    kinds = {k["kind"]: k for k in stack.get("/api/v1/job-kinds").json()}
    assert [s["key"] for s in kinds["audit"]["steps"]][:5] == [c["step_key"] for c in children]
    assert all(c["status"] == "succeeded" for c in children)
    run_id = done["run_id"]
    run = stack.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["layers"] == ["relu1"]
    assert run["table"][0]["layer"] == "relu1"
    for m in ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"):
        assert run["table"][0][m] is not None, m
    assert run["accuracy"]["init"] is not None and run["history"] and run["alpha_trajectory"]
    units = stack.get(f"/api/v1/runs/{run_id}/layers/relu1/units", params={"sort": "kendall_tau", "order": "asc",
                                                                          "page_size": 10}).json()
    assert units["total"] == 32 and len(units["items"]) == 10
    taus = [u["kendall_tau"] for u in units["items"] if u["kendall_tau"] is not None]
    assert taus == sorted(taus)
    u0 = units["items"][0]["unit"]
    d = stack.get(f"/api/v1/runs/{run_id}/layers/relu1/units/{u0}").json()
    for role in ("train", "val"):
        for side in ("before", "after"):
            imgs = d["topk"][role][side]
            assert len(imgs) == 10
            assert all(i["label_name"] and i["thumb_url"] and i["score"] is not None for i in imgs)
    assert set(d["metrics"]) == {"clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"}
    assert d["nearest"]["by_tau_init"] and d["nearest"]["by_clip_final"]
    # thumbnails: signed URL works without credentials, cached briefly, revalidated by ETag
    thumb = httpx.get(stack.base + d["topk"]["val"]["before"][0]["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert thumb.headers["cache-control"] == "private, max-age=300" and thumb.headers.get("etag")
    again = httpx.get(stack.base + d["topk"]["val"]["before"][0]["thumb_url"],
                      headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304
    # exports
    ej = stack.get(f"/api/v1/runs/{run_id}/export.json").json()
    assert len(ej["units"]) == 32 and ej["run"]["id"] == run_id
    csv = stack.get(f"/api/v1/runs/{run_id}/export.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == 33


def _recomputed_pushup(units: list[dict], role: str, side: str, k: int, decoy: int, decoy_ids=None) -> dict:
    """SPEC §3 push-up success from the run's own stored top-k (the unit rows), by hand."""
    tops = [u["topk"][role][side] for u in units if u["attacked"]]
    has = [any(lab == decoy for lab in t["labels"][:k]) for t in tops]
    shares = [sum(lab == decoy for lab in t["labels"][:k]) / k for t, h in zip(tops, has) if h]
    out = {"share_units_with_decoy_class": sum(has) / len(tops),
           "mean_decoy_class_share": sum(shares) / len(shares) if shares else None}
    if decoy_ids is not None:
        out["share_units_with_decoy_images"] = sum(any(i in set(decoy_ids) for i in t["ids"][:k])
                                                   for t in tops) / len(tops)
    return out


def test_push_up_chain_reports_success(stack):
    """The push-up success shares are exactly those of the run's own stored top-k, before and after."""
    spec = stack.audit_spec(kind="push_up", decoy_class="Bag", layers=["relu3"], steps=30, alpha=0.9,
                            n_decoys=20, decoy_batch_size=20, acc_budget_pp=100.0)
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["attack"]["decoy_class"] == 8   # class name normalised to its index
    done = stack.wait_job(r.json()["id"])
    assert done["status"] == "succeeded", done
    run = stack.get(f"/api/v1/runs/{done['run_id']}").json()
    pu = run["pushup"]
    assert pu["decoy_class"] == 8 and pu["decoy_class_name"] == "Bag" and pu["k"] == run["k_clip"] == 5
    attack = stack.job(done["children"][1])["result"]
    assert attack["accuracy"]["selected_step"] == 30          # the budget admits the last state: a real change
    units = stack.get(f"/api/v1/runs/{done['run_id']}/export.json").json()["units"]
    assert sum(u["attacked"] for u in units) == len(attack["attacked"]["relu3"]) > 0
    for key, role, side, ids in (("val", "val", "after", None), ("val_init", "val", "before", None),
                                 ("train", "train", "after", attack["decoy_ids"]),
                                 ("train_init", "train", "before", attack["decoy_ids"])):
        want = _recomputed_pushup(units, role, side, 5, 8, ids)
        got = pu[key]["relu3"]
        for m, v in want.items():
            assert (got[m] is None) if v is None else got[m] == pytest.approx(v, abs=1e-12), (key, m, got, want)
    # the attack pushed the decoy class up against its own θ_init baseline
    assert pu["val"]["relu3"]["share_units_with_decoy_class"] > pu["val_init"]["relu3"]["share_units_with_decoy_class"]


def test_cancel_stops_running_attack_within_one_step(stack):
    r = stack.post("/api/v1/jobs", {"kind": "attack", "spec": stack.attack_spec(checkpoint_every=100_000)})
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    stack.wait_progress(jid, lambda j: j["status"] == "running" and j["progress"].get("stage") == "push_down"
                        and (j["progress"].get("done") or 0) >= 3)
    resp = stack.post(f"/api/v1/jobs/{jid}/cancel")
    t_resp = time.time()
    assert resp.status_code == 200 and resp.json()["cancel_requested"] is True
    job = stack.wait_job(jid, timeout=120)
    assert job["status"] == "cancelled", job
    assert "cancel" in job["error"]
    info = job["result"]["cancel"]
    after = [step for t, step in info["recent_advances"] if t > t_resp]
    assert len(after) <= 1, f"steps completed after the cancel request was acknowledged: {after}"
    assert info["stopped_at"] < 100_000
    run = stack.get(f"/api/v1/runs/{job['run_id']}").json()
    assert run["status"] == "cancelled"


def test_cancel_queued_audit_cancels_every_step(stack):
    stack.worker.stop()                       # nothing runs: the audit stays queued
    try:
        r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": stack.audit_spec()})
        jid = r.json()["id"]
        c = stack.post(f"/api/v1/jobs/{jid}/cancel").json()
        assert c["status"] == "cancelled"
        assert all(stack.job(k)["status"] == "cancelled" for k in c["children"])
    finally:
        stack.start_worker()


def test_sigkill_worker_mid_attack_is_resumed_from_checkpoint(stack):
    r = stack.post("/api/v1/jobs", {"kind": "attack", "spec": stack.attack_spec(checkpoint_every=5)})
    jid = r.json()["id"]
    stack.wait_progress(jid, lambda j: j["progress"].get("stage") == "push_down" and (j["progress"].get("done") or 0) >= 12)
    stack.worker.kill9()
    # the reaper notices (dead process / stale heartbeat) and requeues: never "running" forever
    requeued = stack.wait_job(jid, statuses=("queued", "failed"), timeout=60)
    assert requeued["status"] == "queued", requeued
    assert any("requeued" in (e["data"].get("message") or "") for e in stack.log_events(jid))
    stack.start_worker()
    stack.wait_progress(jid, lambda j: j["status"] == "running" and j["attempts"] == 2)
    resumed = stack.until(lambda: [e for e in stack.log_events(jid) if "resumed from step" in
                                  (e["data"].get("message") or "")], 60, "the resume log line")
    step = resumed[0]["data"]["step"]
    assert step >= 10 and step % 5 == 0, resumed
    stack.post(f"/api/v1/jobs/{jid}/cancel")
    assert stack.wait_job(jid)["status"] == "cancelled"


def test_reaper_fails_job_after_max_attempts(db_env):
    """A job whose worker vanished after its last allowed attempt is failed, with the reason."""
    from fvaudit.db.tables import Job, utcnow
    from fvaudit.db.session import session_scope
    from fvaudit.jobs.reaper import reap_once
    from datetime import timedelta

    with session_scope() as db:
        job = Job(kind="scan", spec={}, status="running", attempts=3, worker="celery@elsewhere:1", lease="x",
                  heartbeat_at=utcnow() - timedelta(minutes=10), progress={})
        job2 = Job(kind="scan", spec={}, status="running", attempts=1, worker="celery@elsewhere:1", lease="y",
                   heartbeat_at=utcnow() - timedelta(minutes=10), progress={}, cancel_requested=True)
        db.add_all([job, job2])
        db.flush()
        ids = job.id, job2.id
        old = Job(kind="scan", spec={}, status="running", attempts=1, worker="celery@elsewhere:1", lease="z",
                  heartbeat_at=utcnow(), started_at=utcnow() - timedelta(days=30), progress={})
        db.add(old)
        db.flush()
        old_id = old.id
    reap_once(max_attempts=3)      # (the API's reaper thread may get there first: check the rows)
    with session_scope() as db:
        j = db.get(Job, ids[0])
        assert j.status == "failed" and "stopped heartbeating" in j.error and "3 attempt" in j.error
        assert db.get(Job, ids[1]).status == "cancelled"
        o = db.get(Job, old_id)
        assert o.status == "running" and o.cancel_requested      # its runner stops it at the next step
        o.status, o.lease = "cancelled", None                   # (no runner here: tidy up)


def test_runner_is_idempotent(db_env, audit_run):
    """A redelivered wake-up for a finished job does nothing."""
    from fvaudit.jobs.runner import run_job

    for cid in audit_run["children"]:
        assert run_job(cid, worker="test") == "skipped"


def test_redis_restart_with_queued_jobs_loses_none(stack, redis_server):
    stack.worker.stop()
    try:
        spec = {"model_id": stack.ids["model"], "image_set_ids": [stack.ids["val"]], "layers": ["relu2"], "k": 5}
        ids = [stack.post("/api/v1/jobs", {"kind": "scan", "spec": spec}).json()["id"] for _ in range(3)]
        r = redis_server.client()
        assert stack.until(lambda: r.llen(stack.queue) >= 3, 10, "messages in the queue")
        restart_without_persistence(redis_server)      # the queued messages are gone
    finally:
        stack.start_worker()
    for jid in ids:
        assert stack.wait_job(jid, timeout=180)["status"] == "succeeded"


def test_celery_parent_stays_light_and_configured(stack):
    """The Celery parent imports neither the engine nor CUDA; settings as ARCHITECTURE.md asks."""
    import subprocess
    import sys

    code = ("import sys, fvaudit.worker as w\n"
            "c = w.app.conf\n"
            "assert c.task_acks_late and c.worker_prefetch_multiplier == 1 and c.worker_concurrency == 1\n"
            "assert c.worker_pool == 'prefork'\n"
            "from fvaudit.config import get_settings\n"
            "assert c.broker_transport_options['visibility_timeout'] > get_settings().max_job_seconds\n"
            "assert not [m for m in sys.modules if m.startswith('fvaudit.engine') or m == 'fvaudit.jobs.runner']\n"
            "import torch\n"
            "assert not torch.cuda.is_initialized()\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], env=stack.env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_manual_chain_of_scan_attack_scan_metrics_jobs(stack):
    """The building blocks, submitted at once: each waits for the job it refers to."""
    m, tr, va = stack.ids["model"], stack.ids["train"], stack.ids["val"]
    scan = {"model_id": m, "image_set_ids": [tr, va], "layers": ["relu2"], "k": 10}
    s1 = stack.post("/api/v1/jobs", {"kind": "scan", "spec": scan}).json()
    atk = stack.post("/api/v1/jobs", {"kind": "attack", "spec": {
        "model_id": m, "train_set_id": tr, "val_set_id": va, "init_scan_job_id": s1["id"],
        "attack": {"kind": "push_down", "layers": ["relu2"], "units": [0, 1, 2, 3], "steps": 10, "batch_size": 64,
                   "eval_every": 5, "eval_size": 400}}}).json()
    assert atk["depends_on_id"] == s1["id"] and atk["run_id"]
    s2 = stack.post("/api/v1/jobs", {"kind": "scan", "spec": {**scan, "weights_from": {"job_id": atk["id"]}}}).json()
    assert s2["depends_on_id"] == atk["id"]
    met = stack.post("/api/v1/jobs", {"kind": "metrics", "spec": {
        "before_scan_job_id": s1["id"], "after_scan_job_id": s2["id"], "val_set_id": va, "train_set_id": tr,
        "attack_job_id": atk["id"], "embedder": "none"}})
    assert met.status_code == 201, met.text
    met = met.json()
    assert met["run_id"] == atk["run_id"] and met["depends_on_id"] == s2["id"]
    assert stack.wait_job(met["id"])["status"] == "succeeded"
    assert stack.job(s2["id"])["result"]["weights"].startswith("artifact:")
    run = stack.get(f"/api/v1/runs/{atk['run_id']}").json()
    assert run["status"] == "succeeded" and run["embedder"] is None
    assert run["layer_info"]["relu2"]["attacked"] == [0, 1, 2, 3]
    assert run["table"][0]["n_attacked"] == 4 and run["table"][0]["clip_delta"] is None
    units = stack.get(f"/api/v1/runs/{atk['run_id']}/layers/relu2/units", params={"attacked_only": "true"}).json()
    assert [u["unit"] for u in units["items"]] == [0, 1, 2, 3]


def test_broker_restart_under_a_running_job(stack, redis_server):
    """Redis restarts while the worker is busy and jobs wait in the queue: the worker
    reconnects, the running job is unaffected, the lost wake-ups are re-sent."""
    r = stack.post("/api/v1/jobs", {"kind": "attack", "spec": stack.attack_spec(checkpoint_every=100_000)})
    long_id = r.json()["id"]
    in_attack = lambda j: j["status"] == "running" and j["progress"].get("stage") == "push_down"  # noqa: E731
    stack.wait_progress(long_id, lambda j: in_attack(j) and (j["progress"].get("done") or 0) >= 2)
    spec = {"model_id": stack.ids["model"], "image_set_ids": [stack.ids["val"]], "layers": ["relu3"], "k": 5}
    ids = [stack.post("/api/v1/jobs", {"kind": "scan", "spec": spec}).json()["id"] for _ in range(2)]
    restart_without_persistence(redis_server)
    before = stack.job(long_id)["progress"].get("done") or 0
    stack.wait_progress(long_id, lambda j: in_attack(j) and (j["progress"].get("done") or 0) > before + 3)
    assert stack.job(long_id)["status"] == "running"
    stack.post(f"/api/v1/jobs/{long_id}/cancel")
    assert stack.wait_job(long_id)["status"] == "cancelled"
    for jid in ids:
        assert stack.wait_job(jid, timeout=180)["status"] == "succeeded"


def test_failing_step_fails_the_chain_with_the_reason(stack):
    """Offline, CLIP weights cannot be had: the metrics step fails and says why; so does its audit."""
    spec = stack.audit_spec(steps=4, eval_every=2)
    spec["embedder"] = "open_clip:ViT-B-32:openai"
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"])
    assert done["status"] == "failed"
    metrics = stack.job(done["children"][4])
    assert metrics["status"] == "failed" and metrics["error"] and metrics["step_key"] == "metrics"
    assert "step 5 (metrics" in done["error"] and metrics["error"] in done["error"]
    run = stack.get(f"/api/v1/runs/{done['run_id']}").json()
    assert run["status"] == "failed" and run["error"] == done["error"]
    assert any("failed" in (e["data"].get("message") or "") and e["data"].get("traceback")
               for e in stack.log_events(done["id"]))
