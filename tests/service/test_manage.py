"""Delete, hide, filter and page (issue 19, item 6), the unit page's state (item 3) and the
attack's outcome against its budget (item 2), on the real stack.

Deletions are checked in the database and on disk: a deleted run's rows and its artifact
files are gone, an artifact another row still references stays. Refusals are 409 with the
reason in words; someone else's run, a share link, cannot delete or hide anything.
"""
from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

A = "/api/v1"


def _small_audit(stack, who: str = "alice", **attack) -> dict:
    """A few steps of push-down on relu1 (no embedder): a run with checkpoints, scans and units."""
    spec = stack.audit_spec(steps=4, eval_every=2, checkpoint_every=2, **attack)
    spec["embedder"] = "none"
    r = stack.post(f"{A}/jobs", {"kind": "audit", "spec": spec}, who=who)
    assert r.status_code == 201, r.text
    return r.json()


def _patch(stack, path: str, body, who: str = "admin", **kw) -> httpx.Response:
    return httpx.patch(stack.base + path, json=body, headers={**stack.h(who), **kw.pop("headers", {})}, timeout=60,
                       **kw)


def _ids(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()]


# ---------------------------------------------------------------- attack outcome (no stack)

def test_attack_outcome_says_when_the_selected_state_is_theta_init():
    """The demo's case: no evaluated state within 0.5 pp on the full set, so "selected" is step 0."""
    from fvaudit.api.serialize import attack_outcome
    from fvaudit.db.tables import Run

    traj = [{"step": s, "drop_pp": d + 0.1, "full_drop_pp": d} for s, d in ((100, 1.3), (200, 1.2), (300, 1.15))]
    run = Run(accuracy={"init": 90.0, "final": 90.0, "last": 88.85, "selected_step": 0, "steps": 300,
                        "over_budget": True, "budget_pp": 0.5}, alpha_trajectory=traj, attack={})
    out = attack_outcome(run)
    assert out == {"selected_step": 0, "final_step": 300, "selected_is_init": True, "final_over_budget": True,
                   "budget_pp": 0.5, "message": (
                       "No evaluated state stayed within the 0.5 pp accuracy budget (drops 1.30, 1.20, 1.15 pp at "
                       "steps 100, 200, 300): the selected state is θ_init, so the 'selected' results show no "
                       "attack. The final state (step 300, a 1.15 pp drop, over budget) is shown under 'final'.")}
    # a state within budget: no message; a run with no attack record: nulls
    run.accuracy = {**run.accuracy, "selected_step": 200, "over_budget": False}
    assert attack_outcome(run) == {"selected_step": 200, "final_step": 300, "selected_is_init": False,
                                   "final_over_budget": False, "budget_pp": 0.5, "message": None}
    assert attack_outcome(Run(accuracy={}, alpha_trajectory=[], attack=None)) == {
        "selected_step": None, "final_step": None, "selected_is_init": False, "final_over_budget": False,
        "budget_pp": None, "message": None}


# ---------------------------------------------------------------- unit page state

def test_unit_page_shows_the_selected_or_the_final_state(stack, audit_run):
    rid = audit_run["run_id"]
    run = stack.get(f"{A}/runs/{rid}", who="alice").json()
    acc = run["accuracy"]
    out = run["attack_outcome"]
    assert out["selected_step"] == acc["selected_step"] and out["final_step"] == acc["steps"] == 20
    assert out["selected_is_init"] == (acc["selected_step"] == 0) and out["budget_pp"] == 0.5
    assert out["final_over_budget"] == acc["over_budget"]
    listed = {r["id"]: r for r in stack.get(f"{A}/runs", who="alice").json()}
    assert listed[rid]["attack_outcome"] == out and listed[rid]["hidden"] is False
    attacked = run["layer_info"]["relu1"]["attacked"]
    base = f"{A}/runs/{rid}/layers/relu1/units"
    finals = {(r["layer"], r["state"]): r for r in run["rows"]}
    differs, overlaps = 0, []
    for u in attacked:
        sel = stack.get(f"{base}/{u}", who="alice").json()
        fin = stack.get(f"{base}/{u}", params={"state": "final"}, who="alice").json()
        assert sel["state"] == "selected" and fin["state"] == "final" and fin["read_only"] is False
        assert sel["states"] == fin["states"] == ["selected", "final"]
        for role in ("val", "train"):
            assert [i["image_id"] for i in fin["topk"][role]["before"]] == \
                [i["image_id"] for i in sel["topk"][role]["before"]]
            assert len(fin["topk"][role]["after"]) == len(sel["topk"][role]["after"]) > 0
        differs += [i["image_id"] for i in sel["topk"]["val"]["after"]] != \
            [i["image_id"] for i in fin["topk"]["val"]["after"]]
        assert set(fin["metrics"]) == set(sel["metrics"])
        if fin["metrics"]["topk_overlap"] is not None:
            overlaps.append(fin["metrics"]["topk_overlap"])
    # the final state's metrics are the ones its Table 3.1 row averages
    assert finals[("relu1", "final")]["topk_overlap"] == pytest.approx(sum(overlaps) / len(overlaps), abs=1e-12)
    if acc["selected_step"] != acc["steps"]:
        assert differs > 0, "the final state's top-k should differ from the selected state's for some unit"
    else:
        assert differs == 0
    r = stack.get(f"{base}/{attacked[0]}", params={"state": "init"}, who="alice")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "state"]


def test_unit_state_of_a_row_without_final_top_k_is_404(stack, audit_run, db_env):
    """A row written before the final top-k was kept (only its metrics in extra) lists one state."""
    from fvaudit.db.tables import UnitResult
    from fvaudit.db.session import session_scope

    rid = audit_run["run_id"]
    with session_scope() as db:
        u = db.scalar(select(UnitResult).where(UnitResult.run_id == rid, UnitResult.layer == "relu1",
                                               UnitResult.unit == 0))
        saved_topk, saved_extra = u.topk, u.extra
        u.topk = {role: {k: v for k, v in e.items() if k != "final"} for role, e in u.topk.items()}
        u.extra = {"states": saved_extra["states"]}
    try:
        r = stack.get(f"{A}/runs/{rid}/layers/relu1/units/0", who="alice")
        assert r.status_code == 200 and r.json()["states"] == ["selected"] and r.json()["state"] == "selected"
        r = stack.get(f"{A}/runs/{rid}/layers/relu1/units/0", params={"state": "final"}, who="alice")
        assert r.status_code == 404
        assert r.json()["detail"] == (f"run {rid} has no final state for unit relu1/0: its metrics measured only "
                                      "selected (a run measured before the final state's top-k were kept: re-run "
                                      "its metrics to add it)")
    finally:
        with session_scope() as db:
            u = db.scalar(select(UnitResult).where(UnitResult.run_id == rid, UnitResult.layer == "relu1",
                                                   UnitResult.unit == 0))
            u.topk, u.extra = saved_topk, saved_extra


# ---------------------------------------------------------------- runs: hide, filter, page, delete

@pytest.fixture(scope="module")
def small_run(stack):
    """No state within a 0 pp budget (a large step size moves the accuracy at once): the demo's
    case, where the selected state is θ_init and only the final state shows the attack."""
    job = stack.wait_job(_small_audit(stack, lr=3e-2, acc_budget_pp=0.0)["id"], who="alice")
    assert job["status"] == "succeeded", job
    return job


def test_a_run_whose_selected_state_is_theta_init_says_so_and_offers_the_final_one(stack, small_run):
    rid = small_run["run_id"]
    run = stack.get(f"{A}/runs/{rid}", who="alice").json()
    acc, out = run["accuracy"], run["attack_outcome"]
    assert acc["selected_step"] == 0 and acc["steps"] == 4 and acc["over_budget"] is True
    assert out["selected_is_init"] is True and out["final_over_budget"] is True and out["budget_pp"] == 0.0
    assert out["message"].startswith("No evaluated state stayed within the 0 pp accuracy budget (drops ")
    assert out["message"].endswith(f"pp drop, over budget) is shown under 'final'.")
    assert f"The final state (step 4, a {acc['init'] - acc['last']:.2f} pp drop" in out["message"]
    base = f"{A}/runs/{rid}/layers/relu1/units"
    moved = 0
    for u in run["layer_info"]["relu1"]["attacked"]:
        sel = stack.get(f"{base}/{u}", who="alice").json()
        fin = stack.get(f"{base}/{u}", params={"state": "final"}, who="alice").json()
        assert sel["states"] == fin["states"] == ["selected", "final"]
        # selected = θ_init: its top-k are the θ_init top-k, image for image
        for role in ("val", "train"):
            assert [i["image_id"] for i in sel["topk"][role]["after"]] == \
                [i["image_id"] for i in sel["topk"][role]["before"]]
        assert sel["metrics"]["topk_overlap"] == 1.0
        moved += [i["image_id"] for i in fin["topk"]["val"]["after"]] != \
            [i["image_id"] for i in fin["topk"]["val"]["before"]]
    assert moved > 0
    rows = {(r["layer"], r["state"]): r for r in run["rows"]}
    assert rows[("relu1", "final")]["topk_overlap"] < 1.0 == rows[("relu1", "selected")]["topk_overlap"]


def test_runs_filter_page_and_hide(stack, audit_run, small_run):
    rid = small_run["run_id"]
    all_ids = _ids(stack.get(f"{A}/runs", params={"limit": 1000}, who="alice"))
    assert rid in all_ids and audit_run["run_id"] in all_ids
    r = stack.get(f"{A}/runs", params={"limit": 1, "offset": 1}, who="alice")
    assert r.headers["X-Total-Count"] == str(len(all_ids)) and _ids(r) == all_ids[1:2]
    r = stack.get(f"{A}/runs", params={"status": "succeeded", "model_id": stack.ids["model"], "limit": 1000},
                  who="alice")
    assert all(x["status"] == "succeeded" and x["model_id"] == stack.ids["model"] for x in r.json())
    assert rid in _ids(r) and r.headers["X-Total-Count"] == str(len(r.json()))
    assert _ids(stack.get(f"{A}/runs", params={"status": "running"}, who="alice")) == []
    # q: a name substring, case-insensitive, its % taken literally
    name = stack.get(f"{A}/runs/{rid}", who="alice").json()["name"]
    assert rid in _ids(stack.get(f"{A}/runs", params={"q": name.upper()}, who="alice"))
    assert _ids(stack.get(f"{A}/runs", params={"q": "%"}, who="alice")) == []
    # hide: out of the list, back with include_hidden, still readable by address
    r = _patch(stack, f"{A}/runs/{rid}", {"hidden": True}, who="alice")
    assert r.status_code == 200 and r.json()["hidden"] is True and r.json()["id"] == rid
    r = stack.get(f"{A}/runs", params={"limit": 1000}, who="alice")
    assert rid not in _ids(r) and r.headers["X-Total-Count"] == str(len(all_ids) - 1)
    assert rid in _ids(stack.get(f"{A}/runs", params={"include_hidden": "true", "limit": 1000}, who="alice"))
    assert stack.get(f"{A}/runs/{rid}", who="alice").json()["hidden"] is True
    assert _patch(stack, f"{A}/runs/{rid}", {"hidden": "yes"}, who="alice").status_code == 422
    assert _patch(stack, f"{A}/runs/{rid}", {"hidden": 1}, who="alice").status_code == 422
    assert _patch(stack, f"{A}/runs/{rid}", {"hidden": False}, who="alice").json()["hidden"] is False
    assert rid in _ids(stack.get(f"{A}/runs", params={"limit": 1000}, who="alice"))


def test_nobody_else_and_no_share_link_can_delete_or_hide_a_run(stack, small_run):
    rid = small_run["run_id"]
    assert stack.delete(f"{A}/runs/{rid}", who="bob").status_code == 404
    assert _patch(stack, f"{A}/runs/{rid}", {"hidden": True}, who="bob").status_code == 404
    token = stack.post(f"{A}/runs/{rid}/shares", who="alice").json()["token"]
    share = {"X-Share-Token": token}
    assert stack.get(f"{A}/runs/{rid}", who=None, headers=share).status_code == 200
    r = stack.delete(f"{A}/runs/{rid}", who=None, headers=share)
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert _patch(stack, f"{A}/runs/{rid}", {"hidden": True}, who=None, headers=share).status_code == 403
    assert stack.get(f"{A}/runs/{rid}", who="alice").json()["hidden"] is False


def test_a_queued_run_cannot_be_deleted_until_cancelled(stack):
    job = _small_audit(stack)
    # a job that did not succeed keeps its scratch folder "for a look": the deletion removes it
    work = stack.tmp / "data" / "work" / f"job-{job['children'][1]}"
    (work / "ckpt").mkdir(parents=True, exist_ok=True)
    (work / "ckpt" / "step-2.safetensors").write_bytes(b"x")
    r = stack.delete(f"{A}/runs/{job['run_id']}", who="alice")
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(f"run {job['run_id']} is still ") and \
        r.json()["detail"].endswith("cancel it first")
    assert stack.post(f"{A}/jobs/{job['id']}/cancel", who="alice").status_code == 200
    assert stack.wait_job(job["id"], who="alice")["status"] == "cancelled"
    assert stack.delete(f"{A}/runs/{job['run_id']}", who="alice").status_code == 204
    assert stack.get(f"{A}/runs/{job['run_id']}", who="alice").status_code == 404
    assert stack.get(f"{A}/jobs/{job['id']}", who="alice").status_code == 404
    assert not work.exists()


def test_deleting_a_run_removes_its_rows_and_the_artifacts_nothing_else_uses(stack, audit_run, small_run, db_env):
    from fvaudit.db.tables import Artifact, Job, JobEvent, Model, Run, Scan, ScanLayer, ShareLink, UnitResult
    from fvaudit.db.session import session_scope
    from fvaudit.store import get_store

    rid, jid = small_run["run_id"], small_run["id"]
    store = get_store()
    assert stack.post(f"{A}/runs/{rid}/shares", who="alice").status_code == 201
    with session_scope() as db:
        run = db.get(Run, rid)
        jobs = set(db.scalars(select(Job.id).where((Job.parent_id == jid) | (Job.id == jid))))
        ckpts = {a.sha256: store.path(a) for a in db.scalars(select(Artifact).where(
            Artifact.id.in_([run.selected_id, run.final_id])))}
        scores = {a.sha256: store.path(a) for a in db.scalars(
            select(Artifact).join(ScanLayer, ScanLayer.scores_id == Artifact.id).join(Scan, Scan.id == ScanLayer.scan_id)
            .where(Scan.job_id.in_(jobs)))}
        # the score matrices the shared audit's scans keep (same model, set and layer: the same θ_init bytes)
        other = set(db.scalars(select(Artifact.sha256).join(ScanLayer, ScanLayer.scores_id == Artifact.id)
                               .join(Scan, Scan.id == ScanLayer.scan_id).where(Scan.job_id.not_in(jobs))))
        # checkpoints other rows hold: this run's selected state is θ_init, whose bytes every run
        # selected at step 0 shares (content-addressed), and other jobs' results and scans name weights
        other_ckpt = set()
        for a in db.scalars(select(Artifact).where(Artifact.sha256.in_(list(ckpts)))):
            if (db.scalar(select(func.count()).select_from(Run).where(
                    Run.id != rid, (Run.selected_id == a.id) | (Run.final_id == a.id)))
                    or db.scalar(select(func.count()).select_from(Model).where(Model.checkpoint_id == a.id))
                    or db.scalar(select(func.count()).select_from(Scan).where(
                        Scan.weights == f"artifact:{a.sha256}", Scan.job_id.not_in(jobs)))
                    or any(a.sha256 in json.dumps(r or {})
                           for r in db.scalars(select(Job.result).where(Job.id.not_in(jobs))))):
                other_ckpt.add(a.sha256)
        assert db.scalar(select(func.count()).select_from(UnitResult).where(UnitResult.run_id == rid)) == 32
    assert len(ckpts) == 2 and all(p.exists() for p in ckpts.values())
    assert len(scores) >= 3 and all(p.exists() for p in scores.values())
    assert stack.delete(f"{A}/runs/{rid}", who="alice").status_code == 204
    assert stack.get(f"{A}/runs/{rid}", who="alice").status_code == 404
    assert stack.delete(f"{A}/runs/{rid}", who="alice").status_code == 404
    assert rid not in _ids(stack.get(f"{A}/runs", params={"include_hidden": "true", "limit": 1000}, who="alice"))
    with session_scope() as db:
        assert db.get(Run, rid) is None
        assert db.scalar(select(func.count()).select_from(Job).where(Job.id.in_(jobs))) == 0
        assert db.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id.in_(jobs))) == 0
        assert db.scalar(select(func.count()).select_from(Scan).where(Scan.job_id.in_(jobs))) == 0
        assert db.scalar(select(func.count()).select_from(UnitResult).where(UnitResult.run_id == rid)) == 0
        assert db.scalar(select(func.count()).select_from(ShareLink).where(ShareLink.run_id == rid)) == 0
        left = set(db.scalars(select(Artifact.sha256).where(Artifact.sha256.in_(list(ckpts) + list(scores)))))
    for sha, p in ckpts.items():         # gone unless another row holds the same weights
        assert p.exists() == (sha in other_ckpt) == (sha in left), sha
    assert ckpts.keys() - other_ckpt, "the final state's weights are this run's own: they must be deleted"
    for sha, p in scores.items():        # gone unless the shared audit's scans hold the same content
        assert p.exists() == (sha in other) == (sha in left), sha
    # the shared audit is untouched
    assert stack.get(f"{A}/runs/{audit_run['run_id']}/layers/relu1/units/0", who="alice").status_code == 200


# ---------------------------------------------------------------- models and image sets

def test_a_model_with_runs_is_hidden_not_deleted(stack, audit_run):
    mid = stack.ids["model"]
    item = {m["id"]: m for m in stack.get(f"{A}/models").json()}[mid]
    n_runs = int(stack.get(f"{A}/runs", params={"model_id": mid, "include_hidden": "true", "limit": 1},
                           who="admin").headers["X-Total-Count"])
    assert item["status"] == "ready" and item["status_reason"] is None and item["hidden"] is False
    assert item["usage"]["runs"] == n_runs >= 1
    r = stack.delete(f"{A}/models/{mid}")
    assert r.status_code == 409
    u = item["usage"]
    parts = [f"{u['runs']} run{'s' if u['runs'] != 1 else ''}"]
    if u["models"]:
        parts.append(f"{u['models']} derived model{'s' if u['models'] != 1 else ''}")
    if u["jobs"]:
        parts.append(f"{u['jobs']} job{'s' if u['jobs'] != 1 else ''}")
    said = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    assert r.json()["detail"] == f"model {mid} has {said}: it can be hidden, not deleted"
    # alice does not own it: she can neither hide nor delete it
    assert _patch(stack, f"{A}/models/{mid}", {"hidden": True}, who="alice").status_code == 403
    assert stack.delete(f"{A}/models/{mid}", who="alice").status_code == 403


def test_a_model_nothing_derives_from_is_deleted_and_hidden_ones_leave_the_pickers(stack, db_env):
    r = stack.post(f"{A}/models", {"name": "spare CNN", "registry_name": "fmnist-cnn", "pretrained": False},
                   who="alice")
    assert r.status_code == 201, r.text
    m = r.json()
    assert (m["status"], m["hidden"], m["usage"]) == ("ready", False, {"runs": 0, "models": 0, "jobs": 0})
    mid = m["id"]
    assert mid in _ids(stack.get(f"{A}/models", params={"usable": "true"}, who="alice"))
    r = stack.get(f"{A}/models", params={"q": "SPARE cnn"}, who="alice")
    assert _ids(r) == [mid] and r.headers["X-Total-Count"] == "1"
    r = stack.get(f"{A}/models", params={"limit": 1}, who="alice")
    assert r.headers["X-Total-Count"] == str(len(stack.get(f"{A}/models", who="alice").json())) and len(r.json()) == 1
    assert _patch(stack, f"{A}/models/{mid}", {"hidden": True}, who="alice").json()["hidden"] is True
    for params in ({}, {"usable": "true"}):
        assert mid not in _ids(stack.get(f"{A}/models", params=params, who="bob"))
    assert mid in _ids(stack.get(f"{A}/models", params={"include_hidden": "true"}, who="bob"))
    assert mid in _ids(stack.get(f"{A}/models", params={"usable": "false", "include_hidden": "true"}, who="bob"))
    assert stack.delete(f"{A}/models/{mid}", who="bob").status_code == 403
    assert stack.delete(f"{A}/models/{mid}", who="alice").status_code == 204
    assert stack.get(f"{A}/models/{mid}", who="alice").status_code == 404
    assert mid not in _ids(stack.get(f"{A}/models", params={"include_hidden": "true"}, who="alice"))


def test_image_sets_failed_status_usable_filter_and_delete(stack, db_env):
    from fvaudit.db.tables import Image
    from fvaudit.db.session import session_scope

    root = stack.allowed / "manage-broken"
    for c in ("x", "y"):
        (root / c).mkdir(parents=True, exist_ok=True)
        (root / c / "a.jpg").write_bytes(b"garbage")
    r = stack.post(f"{A}/image-sets", {"name": "broken for manage", "source": str(root)}, who="alice")
    assert r.status_code == 202, r.text
    bad, reg = r.json()["id"], r.json()["job"]["id"]
    assert stack.wait_job(reg, who="alice")["status"] == "failed"
    listed = {s["id"]: s for s in stack.get(f"{A}/image-sets", who="alice").json()}
    assert listed[bad]["status"] == "failed" and listed[bad]["size"] == 0 and listed[bad]["hidden"] is False
    assert listed[bad]["error"] == ("ImageSetError: image folder " + str(root.resolve()) + " holds no readable images "
                                    "(2 unreadable files skipped)")
    usable = stack.get(f"{A}/image-sets", params={"usable": "true"}, who="alice")
    assert bad not in _ids(usable) and stack.ids["val"] in _ids(usable)
    assert all(s["status"] == "ready" and s["size"] > 0 for s in usable.json())
    assert bad in _ids(stack.get(f"{A}/image-sets", params={"usable": "false"}, who="alice"))
    # the demo's validation set has runs: 409 with the count; bob cannot touch alice's set
    val = stack.ids["val"]
    n_runs = stack.delete(f"{A}/image-sets/{val}").json()["detail"]
    assert n_runs.startswith(f"image set {val} is used by ") and n_runs.endswith(": it can be hidden, not deleted")
    assert stack.delete(f"{A}/image-sets/{bad}", who="bob").status_code == 403
    # a small set of its own: hidden leaves the list, deleted takes its image index along
    r = stack.post(f"{A}/image-sets", {"name": "tiny test set", "source": "fashion-mnist:test", "limit": 20},
                   who="alice")
    assert r.status_code == 201, r.text
    tiny = r.json()["id"]
    thumb = stack.get(f"{A}/image-sets/{tiny}/classes/0/samples", params={"n": 1}, who="alice").json()[0]
    assert stack.get(thumb["thumb_url"], who="alice").status_code == 200
    assert _patch(stack, f"{A}/image-sets/{tiny}", {"hidden": True}, who="alice").json()["hidden"] is True
    assert tiny not in _ids(stack.get(f"{A}/image-sets", who="alice"))
    assert tiny not in _ids(stack.get(f"{A}/image-sets", params={"usable": "true"}, who="alice"))
    assert tiny in _ids(stack.get(f"{A}/image-sets", params={"include_hidden": "true"}, who="alice"))
    for sid in (tiny, bad):
        assert stack.delete(f"{A}/image-sets/{sid}", who="alice").status_code == 204
        assert stack.get(f"{A}/image-sets/{sid}", who="alice").status_code == 404
    assert stack.get(f"{A}/jobs/{reg}", who="alice").status_code == 404
    with session_scope() as db:
        assert db.scalar(select(func.count()).select_from(Image).where(Image.image_set_id.in_([tiny, bad]))) == 0


# ---------------------------------------------------------------- sweeps and jobs

def test_a_cancelled_sweep_models_are_not_usable_and_the_sweep_deletes_with_them(stack):
    from test_prune_sweep_jobs import sweep_spec

    r = stack.post(f"{A}/jobs", {"kind": "sweep", "spec": sweep_spec(stack, name="sweep to delete")}, who="alice")
    assert r.status_code == 201, r.text
    sweep = r.json()
    r = stack.delete(f"{A}/sweeps/{sweep['id']}", who="alice")
    assert r.status_code == 409 and r.json()["detail"].endswith("cancel it first"), r.text
    assert stack.post(f"{A}/jobs/{sweep['id']}/cancel", who="alice").status_code == 200
    done = stack.wait_job(sweep["id"], timeout=300, who="alice")
    assert done["status"] == "cancelled"
    detail = stack.get(f"{A}/sweeps/{sweep['id']}", who="alice").json()
    pruned = detail["points"][1]["model_id"]
    prune_job = detail["points"][1]["prune_job_id"]
    runs = [a["run_id"] for p in detail["points"] for a in p["audits"].values()]
    m = {x["id"]: x for x in stack.get(f"{A}/models", who="alice").json()}[pruned]
    assert m["status"] == "failed" and m["status_reason"] == (f"its prune job {prune_job} was cancelled before "
                                                              "it made weights")
    assert m["usage"] == {"runs": 2, "models": 0, "jobs": 0}
    assert pruned not in _ids(stack.get(f"{A}/models", params={"usable": "true"}, who="alice"))
    assert pruned in _ids(stack.get(f"{A}/models", params={"usable": "false"}, who="alice"))
    r = stack.delete(f"{A}/models/{pruned}", who="alice")
    assert r.status_code == 409 and r.json()["detail"] == f"model {pruned} has 2 runs: it can be hidden, not deleted"
    r = stack.delete(f"{A}/runs/{runs[0]}", who="alice")
    assert r.status_code == 409
    assert r.json()["detail"] == (f"run {runs[0]} is part of sweep {sweep['id']}: delete the sweep (it deletes its "
                                  "runs), or hide the run")
    # list, filter, hide
    r = stack.get(f"{A}/sweeps", params={"status": "cancelled", "limit": 1000}, who="alice")
    assert sweep["id"] in _ids(r) and r.headers["X-Total-Count"] == str(len(r.json()))
    assert _patch(stack, f"{A}/sweeps/{sweep['id']}", {"hidden": True}, who="alice").json()["hidden"] is True
    assert sweep["id"] not in _ids(stack.get(f"{A}/sweeps", who="alice"))
    assert sweep["id"] in _ids(stack.get(f"{A}/sweeps", params={"include_hidden": "true"}, who="alice"))
    assert stack.delete(f"{A}/sweeps/{sweep['id']}", who="bob").status_code == 404
    # delete: the sweep, its jobs, runs and the pruned model it made
    assert stack.delete(f"{A}/sweeps/{sweep['id']}", who="alice").status_code == 204
    assert stack.get(f"{A}/sweeps/{sweep['id']}", who="alice").status_code == 404
    for k in sweep["children"]:
        assert stack.get(f"{A}/jobs/{k}", who="alice").status_code == 404
    for rid in runs:
        assert stack.get(f"{A}/runs/{rid}", who="alice").status_code == 404
    assert stack.get(f"{A}/models/{pruned}", who="alice").status_code == 404
    assert stack.get(f"{A}/models/{stack.ids['model']}", who="alice").status_code == 200


def test_jobs_filter_by_kind_and_status_with_a_total(stack, audit_run):
    r = stack.get(f"{A}/jobs", params={"kind": "audit", "top_level": "true", "limit": 1}, who="alice")
    assert r.status_code == 200 and len(r.json()) == 1 and r.json()[0]["kind"] == "audit"
    every = stack.get(f"{A}/jobs", params={"kind": "audit", "top_level": "true", "limit": 1000}, who="alice").json()
    assert r.headers["X-Total-Count"] == str(len(every)) and audit_run["id"] in [j["id"] for j in every]
    r = stack.get(f"{A}/jobs", params={"kind": "metrics", "status": "succeeded", "limit": 1000}, who="alice")
    assert r.json() and all(j["kind"] == "metrics" and j["status"] == "succeeded" for j in r.json())
    assert r.headers["X-Total-Count"] == str(len(r.json()))
    top = stack.get(f"{A}/jobs", params={"top_level": "true", "limit": 1000}, who="alice").json()
    assert all(j["parent_id"] is None and j["group_job_id"] is None for j in top)
