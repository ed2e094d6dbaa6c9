"""Folder registration is a job with progress (not work inside the HTTP request), on the real stack."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np

from svc import embedded_db


def _folder(root: Path, per_class: int = 5, corrupt: bool = True) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in ("ant", "bee", "cow"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    if corrupt:
        (root / "bee" / "02b-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is no image")
    (root / "cow" / "notes.txt").write_text("not an image: never listed")
    return root


def _sse(stack, jid: int) -> list[tuple[str, dict]]:
    """Every event of a finished job, from its SSE stream (it replays the stored events, then ends)."""
    out, event = [], None
    with httpx.stream("GET", f"{stack.base}/api/v1/jobs/{jid}/events", headers=stack.h(), timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
    return out


def test_folder_registration_is_a_job_with_progress(stack):
    root = _folder(stack.allowed / "abc")
    r = stack.post("/api/v1/image-sets", {"name": "abc", "source": str(root)})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "indexing" and accepted["size"] == 0 and accepted["classes"] == []
    job = accepted["job"]
    assert job["kind"] == "register_images" and job["spec"] == {"image_set_id": accepted["id"]}
    assert accepted["job_id"] == job["id"] and job["label"] == "register image folder"
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"size": 15, "classes": 3, "n_skipped": 1}
    s = stack.get(f"/api/v1/image-sets/{accepted['id']}").json()
    assert s["status"] == "ready" and s["error"] is None and s["size"] == 15
    assert s["classes"] == ["ant", "bee", "cow"]
    assert [Path(x["path"]).name for x in s["skipped"]] == ["02b-corrupt.png"]
    assert s["skipped"][0]["reason"].startswith("UnidentifiedImageError")
    # ids as the synchronous indexing gave them: sorted class, sorted file; the corrupt file takes no id
    bees = stack.get(f"/api/v1/image-sets/{accepted['id']}/classes/1/samples", params={"n": 10}).json()
    assert [b["image_id"] for b in bees] == [5, 6, 7, 8, 9]
    assert stack.get(f"/api/v1/image-sets/{accepted['id']}/classes").json() == ["ant", "bee", "cow"]
    # the progress rows, as stored and as streamed
    stored = [e["data"] for e in stack.log_events(job["id"]) if e["type"] == "progress"]
    stages = [d["stage"] for d in stored]
    assert stages[:1] == ["index files"] and "check headers" in stages and stages[-1] == "store rows"
    checks = [d for d in stored if d["stage"] == "check headers"]
    assert checks[0] == {"stage": "check headers", "done": 0, "total": 16}   # 15 images + the corrupt file
    assert checks[-1]["done"] == checks[-1]["total"] == 16
    assert stored[-1] == {"stage": "store rows", "done": 15, "total": 15}
    streamed = _sse(stack, job["id"])
    assert [d for e, d in streamed if e == "progress"] == stored
    assert streamed[0][0] == "status" and streamed[0][1]["status"] == "succeeded"    # the current JSON first
    # the set is usable: a scan over it runs
    sc = stack.post("/api/v1/jobs", {"kind": "scan", "spec": {"model_id": stack.ids["model"],
                                                               "image_set_ids": [accepted["id"]],
                                                               "layers": ["relu1"], "k": 3}})
    assert sc.status_code == 201, sc.text
    assert stack.wait_job(sc.json()["id"])["status"] == "succeeded"


def test_a_limited_folder_keeps_a_class_stratified_sample_of_its_readable_images(stack):
    root = _folder(stack.allowed / "abc-limited")
    s = stack.register_folder("abc (7)", root, limit=7)
    assert s["status"] == "ready" and s["size"] == 7 and s["limit"] == 7
    # 5 readable images per class, 7 places: 7·5/15 = 2.33 each → 2, 2, 2 and the one left to the smallest index
    per_class = [len(stack.get(f"/api/v1/image-sets/{s['id']}/classes/{c}/samples", params={"n": 10}).json())
                 for c in range(3)]
    assert per_class == [3, 2, 2]


def test_a_folder_without_readable_images_fails_and_cannot_be_used(stack):
    root = stack.allowed / "all-broken"
    for c in ("x", "y"):
        (root / c).mkdir(parents=True, exist_ok=True)
        (root / c / "a.jpg").write_bytes(b"garbage")
    r = stack.post("/api/v1/image-sets", {"name": "broken", "source": str(root)})
    assert r.status_code == 202, r.text
    sid, jid = r.json()["id"], r.json()["job"]["id"]
    job = stack.wait_job(jid)
    assert job["status"] == "failed" and "holds no readable images (2 unreadable files skipped)" in job["error"]
    s = stack.get(f"/api/v1/image-sets/{sid}").json()
    assert s["status"] == "failed" and "no readable images" in s["error"] and s["size"] == 0
    listed = {x["id"]: x for x in stack.get("/api/v1/image-sets").json()}
    assert listed[sid]["status"] == "failed"
    sc = stack.post("/api/v1/jobs", {"kind": "scan", "spec": {"model_id": stack.ids["model"], "image_set_ids": [sid],
                                                               "layers": ["relu1"], "k": 1}})
    assert sc.status_code == 422, sc.text
    d = sc.json()["detail"][0]
    assert d["loc"] == ["body", "spec", "image_set_ids", 0]
    # the reason the set failed, not "not ready" as if it were still indexing (issue 19 item 10)
    assert d["msg"] == f"image set {sid} (broken) failed to register and cannot be used: {s['error']}"


def test_cheap_checks_stay_in_the_request_and_internal_kinds_are_not_submittable(stack):
    flat = stack.allowed / "flat"
    flat.mkdir(exist_ok=True)
    (flat / "a.png").write_bytes(b"x")
    r = stack.post("/api/v1/image-sets", {"name": "flat", "source": str(flat)})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "source"]
    assert "has no class subfolders" in r.json()["detail"][0]["msg"]
    for kind, spec in (("register_images", {"image_set_id": stack.ids["val"]}),
                       ("scan_shard", {"scan_job_id": 1, "shard": 0, "shards": 2})):
        r = stack.post("/api/v1/jobs", {"kind": kind, "spec": spec})
        assert r.status_code == 422, r.text
    kinds = {k["kind"] for k in stack.get("/api/v1/job-kinds").json()}
    assert "scan" in kinds and not kinds & {"register_images", "scan_shard"}
    fm = stack.post("/api/v1/image-sets", {"name": "fm 20", "source": "fashion-mnist:test", "limit": 20})
    assert fm.status_code == 201 and fm.json()["status"] == "ready" and fm.json()["job_id"] is None


def test_embedded_mode_indexes_a_folder_with_the_local_worker(tmp_path, monkeypatch):
    """SQLite + the local worker's loop: the same job, its rows written in one transaction
    (no progress write from inside it: SQLite would make that write wait for it)."""
    from fvaudit import local_worker
    from fvaudit.registration import start_folder_registration
    from fvaudit.db.tables import Image, ImageSet, Job, JobEvent, User
    from fvaudit.db.session import session_scope
    from sqlalchemy import func, select

    root = _folder(tmp_path / "data" / "images" / "abc")          # DATA_DIR/images is an allowed root
    with embedded_db(tmp_path / "data", monkeypatch):
        with session_scope() as db:
            user = User(name="u", is_admin=True)
            db.add(user)
            db.flush()
            row, job, wake = start_folder_registration(db, user, "abc", str(root), None)
            sid, jid = row.id, job.id
            assert (row.status, row.size, wake) == ("indexing", 0, [jid])
        assert local_worker.main(once=True) == 0
        with session_scope() as db:
            row, job = db.get(ImageSet, sid), db.get(Job, jid)
            assert job.status == "succeeded", job.error
            assert (row.status, row.size, row.classes) == ("ready", 15, ["ant", "bee", "cow"])
            assert db.scalar(select(func.count()).select_from(Image).where(Image.image_set_id == sid)) == 15
            stages = [e.data["stage"] for e in db.scalars(select(JobEvent).where(JobEvent.job_id == jid,
                                                                                 JobEvent.type == "progress"))]
            assert stages == ["index files", "check headers", "check headers", "store rows", "store rows"]
