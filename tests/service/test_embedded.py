"""The embedded default: `fvaudit demo` (SQLite under a data dir, no broker, a local
worker process running the same job runner). This module is the one place the service
tests use SQLite: it checks the no-infrastructure mode, not the service."""
from __future__ import annotations

import os
import signal
import time

import httpx

from svc import PY, Proc, free_port, wait_until


def test_demo_serves_and_runs_the_queued_audit(tmp_path):
    port = free_port()
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FVAUDIT_") and k not in ("DATABASE_URL", "BROKER_URL", "CELERY_BROKER_URL", "DATA_DIR")}
    env.update({"FVAUDIT_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                "FVAUDIT_TORCH_THREADS": "1", "FVAUDIT_HEARTBEAT_INTERVAL": "1", "FVAUDIT_LOCAL_WORKERS": "2",
                "FVAUDIT_ALLOWED_ROOTS": str(tmp_path)})
    from PIL import Image

    for c in ("cat", "dog"):          # a folder registered while the audit runs: the quick lane indexes it
        (tmp_path / "folder" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "folder" / c / f"{i}.png")
    demo = Proc("demo", [PY, "-m", "fvaudit.cli", "demo", "--data-dir", str(data), "--port", str(port),
                         "--limit-train", "1000", "--limit-val", "300", "--steps", "10",
                         "--synth-steps", "4", "--n-synth", "2"], env, tmp_path / "demo.log")
    demo.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(base + "/api/v1/health", timeout=2).status_code == 200, 120,
                   "the demo server")
        out = demo.tail()
        token = (data / "admin_token").read_text().strip()
        assert f"{base}/?token={token}" in out and "admin token" in out
        h = httpx.get(base + "/api/v1/health").json()
        assert h["mode"] == "embedded" and h["broker"] == "none" and h["database"] == "ok"
        assert (data / "fvaudit.db").exists()
        auth = {"Authorization": f"Bearer {token}"}
        jobs = httpx.get(base + "/api/v1/jobs", params={"kind": "audit"}, headers=auth).json()
        assert len(jobs) == 1
        jid = jobs[0]["id"]
        # a folder's indexing goes to the quick-lane worker at once, not behind the audit's steps
        r = httpx.post(base + "/api/v1/image-sets", headers=auth,
                       json={"name": "folder", "source": str(tmp_path / "folder")})
        assert r.status_code == 202, r.text
        set_id = r.json()["id"] if "id" in r.json() else r.json()["image_set"]["id"]

        def indexed():
            s = httpx.get(f"{base}/api/v1/image-sets/{set_id}", headers=auth).json()
            return s if s["status"] != "indexing" else None

        assert wait_until(indexed, 120, "the folder's indexing", interval=0.5)["size"] == 6
        reg = [j for j in httpx.get(base + "/api/v1/jobs", params={"kind": "register_images"}, headers=auth).json()]
        assert reg and reg[0]["worker"].startswith("local-quick"), reg

        def finished():
            j = httpx.get(f"{base}/api/v1/jobs/{jid}", headers=auth).json()
            return j if j["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_until(finished, 600, "the demo audit", interval=1)
        assert job["status"] == "succeeded", (job, demo.tail())
        run = httpx.get(f"{base}/api/v1/runs/{job['run_id']}", headers=auth).json()
        assert run["layers"] == ["relu3"] and run["table"][0]["kendall_tau"] is not None
        assert run["table"][0]["clip_delta"] is not None and run["embedder"]
        # the demo audit runs its α = 0 control and the synthetic step
        assert {r["state"] for r in run["rows"]} == {"selected", "final", "control"} and run["control_run_id"]
        assert run["synthetic"]["relu3"]["means"]["synthetic_clip_delta"] is not None
        unit = httpx.get(f"{base}/api/v1/runs/{job['run_id']}/layers/relu3/units/5", headers=auth).json()
        assert len(unit["topk"]["val"]["after"]) == 10
        assert [i["seed"] for i in unit["synthetic"]["before"]] == [0, 1]
        png = httpx.get(base + unit["synthetic"]["after"][0]["url"], headers=auth)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        worker_pids = [int(p) for p in os.popen(f"pgrep -P {demo.pid}").read().split()]
        assert len(worker_pids) == 3, "two general local workers and the quick lane"
        # Ctrl-C while a job runs: one clean stop, no traceback from a worker interrupted mid-job
        r = httpx.post(base + "/api/v1/jobs", headers=auth, json={"kind": "attack", "spec": {
            "model_id": run["model_id"], "train_set_id": run["train_set_id"], "val_set_id": run["val_set_id"],
            "attack": {"kind": "push_down", "layers": ["relu1"], "steps": 100000, "eval_every": 1000}}})
        assert r.status_code == 201, r.text
        wait_until(lambda: httpx.get(f"{base}/api/v1/jobs/{r.json()['id']}", headers=auth).json()["status"]
                   == "running", 120, "a running attack", interval=0.5)
    finally:
        demo.stop(signal.SIGINT, timeout=30)
    assert "Traceback" not in demo.tail(20000), demo.tail(6000)
    time.sleep(1)
    for pid in worker_pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z", \
            "the local worker outlived the server"
