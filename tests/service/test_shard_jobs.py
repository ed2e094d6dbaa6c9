"""Sharded scans on the real stack: a scan job split into scan_shard members (a Celery group)
merges into rows and artifacts identical bit for bit to the one-worker scan; cancel reaches
the members. The last test runs the embedded mode (SQLite, the local worker's loop, no
broker) in this process: there the shards run one after another."""
from __future__ import annotations

import os
import time
from datetime import datetime

import numpy as np
from sqlalchemy import select

from svc import TRAIN_LIMIT, _pg_connect, embedded_db


def _scan_rows(job_id: int) -> dict:
    from fvaudit.db.tables import Scan
    from fvaudit.db.session import session_scope
    from fvaudit.store import get_store

    out = {}
    with session_scope() as db:
        for s in db.scalars(select(Scan).where(Scan.job_id == job_id)):
            out[s.image_set_id] = {
                "n": (s.n_images, s.n_skipped, s.k),
                "layers": {l.layer: (l.units, list(l.dead_units), l.topk_ids, l.topk_scores, l.scores.sha256,
                                     get_store().path(l.scores).read_bytes()) for l in s.layers}}
    return out


def _members(stack, job_id: int) -> list[dict]:
    jobs = stack.get("/api/v1/jobs", params={"kind": "scan_shard", "limit": 1000}).json()
    return sorted((j for j in jobs if j["group_job_id"] == job_id), key=lambda j: j["seq"])


def test_sharded_scan_equals_the_one_worker_scan_bit_for_bit(stack, db_env):
    spec = {"model_id": stack.ids["model"], "image_set_ids": [stack.ids["train"], stack.ids["val"]],
            "layers": ["relu1", "relu3", "fc1"], "k": 10, "batch_size": 128}
    extra = stack.start_worker()             # two workers: the group's members run side by side
    try:
        r1 = stack.post("/api/v1/jobs", {"kind": "scan", "spec": spec})
        r3 = stack.post("/api/v1/jobs", {"kind": "scan", "spec": {**spec, "shards": 3}})
        assert r1.status_code == 201 and r3.status_code == 201, (r1.text, r3.text)
        one, three = r1.json()["id"], r3.json()["id"]
        assert r3.json()["progress"] == {"stage": "shards", "done": 0, "total": 3, "members": [three + 1, three + 2,
                                                                                             three + 3]}
        assert stack.wait_job(one)["status"] == "succeeded"
        job = stack.wait_job(three)
        assert job["status"] == "succeeded", job
    finally:
        extra.stop()
        stack.workers.remove(extra)
    members = _members(stack, three)
    assert [m["spec"] for m in members] == [{"scan_job_id": three, "shard": i, "shards": 3} for i in range(3)]
    assert all(m["status"] == "succeeded" for m in members)
    # 1500 train images in batches of 128 = 12 batches → 4 per shard; 400 val = 4 batches → 1, 1, 2
    assert [m["result"]["parts"][str(stack.ids["train"])]["start"] for m in members] == [0, 512, 1024]
    assert [m["result"]["parts"][str(stack.ids["val"])]["stop"] for m in members] == [128, 256, 400]
    assert job["result"]["shards"] == [m["id"] for m in members]
    a, b = _scan_rows(one), _scan_rows(three)
    assert set(a) == set(b) == {stack.ids["train"], stack.ids["val"]}
    assert a[stack.ids["train"]]["n"] == (TRAIN_LIMIT, 0, 10)
    for set_id in a:
        assert b[set_id]["n"] == a[set_id]["n"]
        for layer in spec["layers"]:
            la, lb = a[set_id]["layers"][layer], b[set_id]["layers"][layer]
            assert lb[:3] == la[:3]                         # units, dead units, top-k ids
            assert lb[3] == la[3]                           # top-k scores (float32 → JSON, same text)
            assert lb[4] == la[4] and lb[5] == la[5]        # the score matrix: same artifact, same bytes
    scores = np.load(__import__("io").BytesIO(b[stack.ids["val"]]["layers"]["relu3"][5]))
    assert scores.shape == (400, 128) and scores.dtype == np.float32
    top = [j["id"] for j in stack.get("/api/v1/jobs", params={"top_level": "true", "limit": 1000}).json()]
    assert three in top and not set(m["id"] for m in members) & set(top)
    data_dir = stack.env["FVAUDIT_DATA_DIR"]
    assert not os.path.exists(os.path.join(data_dir, "scan-parts", f"scan-{three}"))   # parts removed once merged


def test_cancelling_a_sharded_scan_cancels_its_shards(stack):
    """The cancel is sent while the worker stands still (SIGSTOP) with one shard part-way through
    its rows, so how fast the machine scans cannot decide the outcome: the running shard sees the
    request at its next batch, the shards not yet started never run."""
    spec = {"model_id": stack.ids["model"], "image_set_ids": [stack.ids["train"]], "layers": ["relu1"], "k": 5,
            "batch_size": 1, "shards": 4}
    r = stack.post("/api/v1/jobs", {"kind": "scan", "spec": spec})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    worker = stack.worker
    paused: list[dict] = []

    dbname = stack.db_url.rsplit("/", 1)[-1].split("?")[0]

    def frozen_in_a_transaction() -> bool:
        """A SIGSTOP that lands while the worker holds an open transaction (a progress write)
        keeps its row locks: the cancel below would wait on them for as long as it stands still."""
        time.sleep(0.3)                              # a statement already sent completes server-side
        with _pg_connect(dbname) as conn:
            return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND state LIKE 'idle in transaction%'").fetchone()[0])

    def running_shard_paused() -> bool:
        members = _members(stack, sid)
        if not any(m["status"] == "running" and 0 < m["progress"].get("done", 0) for m in members):
            return False
        worker.pause()
        if frozen_in_a_transaction():
            worker.resume()                          # paused inside a write: look again
            return False
        paused[:] = _members(stack, sid)             # read while nothing moves
        run = [m for m in paused if m["status"] == "running"]
        if len(run) == 1 and 0 < run[0]["progress"].get("done", 0) < run[0]["progress"].get("total", 0):
            return True
        worker.resume()                              # between shards at the instant of the pause: look again
        return False

    stack.until(running_shard_paused, 120, "a shard part-way through its rows")
    try:
        parts = os.path.join(stack.env["FVAUDIT_DATA_DIR"], "scan-parts", f"scan-{sid}")
        assert os.path.isdir(parts)                        # the running shard writes its part there
        c = stack.post(f"/api/v1/jobs/{sid}/cancel")
        assert c.status_code == 200 and c.json()["status"] == "cancelled", c.text
        assert c.json()["error"] == "cancelled on request"
    finally:
        worker.resume()
    stack.until(lambda: all(m["status"] in ("cancelled", "succeeded", "failed") for m in _members(stack, sid)), 120,
                "every shard to end")
    before = {m["id"]: m["status"] for m in paused}
    after = {m["id"]: m for m in _members(stack, sid)}
    for mid, status in before.items():
        expect = "succeeded" if status == "succeeded" else "cancelled"
        assert after[mid]["status"] == expect, (mid, status, after[mid]["status"], after[mid]["error"])
    running = next(mid for mid, status in before.items() if status == "running")
    assert after[running]["error"] == "cancelled on request"
    assert after[running]["progress"]["done"] < after[running]["progress"]["total"]   # stopped part-way
    assert stack.job(sid)["status"] == "cancelled"
    stack.until(lambda: not os.path.exists(parts), 30, "the reaper to remove the cancelled scan's parts")


def test_a_failed_shard_fails_the_scan_and_cancels_the_other_shards(stack, db_env):
    """The group's fan-in (jobs/lifecycle.py) on Postgres: rows written and ended in one transaction,
    as a worker would end a shard that raised, so no worker can take the shards first."""
    from fvaudit.db.tables import Job, User
    from fvaudit.db.session import session_scope
    from fvaudit.jobs.create import create_job
    from fvaudit.jobs.kinds.scan import ScanSpec
    from fvaudit.jobs.lifecycle import finish

    with session_scope() as db:
        user = db.scalar(select(User).where(User.name == "admin"))
        scan, wake = create_job(db, user, "scan", ScanSpec(model_id=stack.ids["model"], image_set_ids=[stack.ids["val"]],
                                                           layers=["relu1"], k=5, shards=3))
        sid = scan.id
        assert wake == [sid + 1, sid + 2, sid + 3]
        first = db.get(Job, sid + 1)
        first.status, first.attempts = "running", 1
        db.flush()
        finish(db, first, "failed", "RuntimeError: disk on fire")
    job = stack.job(sid)
    assert job["status"] == "failed"
    assert job["error"] == f"not run: scan_shard job {sid + 1} failed: RuntimeError: disk on fire"
    others = [stack.job(sid + i) for i in (2, 3)]
    assert [(o["status"], o["cancel_requested"], o["error"]) for o in others] == [
        ("cancelled", True, "cancelled on request")] * 2


def test_embedded_mode_runs_shards_one_after_another(tmp_path, monkeypatch):
    """SQLite + the local worker's loop (no broker): shards, then the merge, in id order; same bytes."""
    from fvaudit import local_worker
    from fvaudit.registration import register_image_set, register_model
    from fvaudit.db.tables import Job, User
    from fvaudit.db.session import session_scope
    from fvaudit.jobs.create import create_job
    from fvaudit.jobs.kinds.scan import ScanSpec

    with embedded_db(tmp_path / "data", monkeypatch):
        with session_scope() as db:
            user = User(name="u", is_admin=True)
            db.add(user)
            db.flush()
            model = register_model(db, user.id, "demo", "fmnist-cnn")
            val = register_image_set(db, user.id, "val", "fashion-mnist:test", 300)
            base = dict(model_id=model.id, image_set_ids=[val.id], layers=["relu3"], k=7, batch_size=64)
            one, _ = create_job(db, user, "scan", ScanSpec(**base))
            two, wake = create_job(db, user, "scan", ScanSpec(**base, shards=2))
            ids, val_id = (one.id, two.id), val.id
            assert wake == [two.id + 1, two.id + 2]            # the members are the wake-ups, not the scan
        assert local_worker.main(once=True) == 0            # runs until nothing is runnable
        with session_scope() as db:
            jobs = {j.id: j for j in db.scalars(select(Job))}
            order = sorted((j.started_at, j.id) for j in jobs.values())
            assert [i for _, i in order] == [ids[0], ids[1] + 1, ids[1] + 2, ids[1]]
            assert all(j.status == "succeeded" for j in jobs.values()), [(j.id, j.status, j.error) for j in jobs.values()]
            assert jobs[ids[1] + 1].finished_at <= jobs[ids[1] + 2].started_at        # one after another
        a, b = _scan_rows(ids[0]), _scan_rows(ids[1])
        assert a == b and a[val_id]["n"] == (300, 0, 7)


def test_an_audit_with_sharded_scans_runs_its_chain(stack):
    """scan_shards in an audit: every scan step is a group; the shards of the scans of the attacked
    weights wait for the attack (their dependency), and the chain runs through to its metrics."""
    spec = stack.audit_spec(steps=10)
    spec["scan_shards"] = 2
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=400)
    assert done["status"] == "succeeded", done
    kids = {k["step_key"]: k for k in (stack.job(c) for c in done["children"])}
    for key in ("scan_init", "scan_selected", "scan_final"):
        members = _members(stack, kids[key]["id"])
        assert [m["status"] for m in members] == ["succeeded", "succeeded"], key
        assert kids[key]["result"]["shards"] == [m["id"] for m in members]
    assert all(m["depends_on_id"] == kids["attack"]["id"] for m in _members(stack, kids["scan_selected"]["id"]))
    # the audit went "running" when the first shard of scan_init started, not when that scan's merge did
    t = datetime.fromisoformat
    first = _members(stack, kids["scan_init"]["id"])
    assert t(done["started_at"]) <= min(t(m["finished_at"]) for m in first) < t(kids["scan_init"]["started_at"])
    run = stack.get(f"/api/v1/runs/{done['run_id']}").json()
    assert run["table"][0]["kendall_tau"] is not None
