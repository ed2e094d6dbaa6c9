"""The audit chain on the real stack: several layers, both states, the α = 0 control and
the synthetic visualization step; the visualize job alone on a model (SPEC §2–§4)."""
from __future__ import annotations

import io
import math

import httpx
import numpy as np
import pytest

METRICS = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap")


def _mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _units(stack, run_id: int) -> list[dict]:
    return stack.get(f"/api/v1/runs/{run_id}/export.json").json()["units"]


@pytest.fixture(scope="module")
def full_audit(stack):
    """relu1 push-down at a fixed α with a budget that admits every state (so the selected state is
    the last one, a real change), with its α = 0 control and the synthetic step (tiny renders)."""
    spec = stack.audit_spec(control=True, visualize=True, alpha=0.9, acc_budget_pp=100.0)
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert r.status_code == 201, r.text
    done = stack.wait_job(r.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done
    run = stack.get(f"/api/v1/runs/{done['run_id']}").json()
    return done, run


def test_full_chain_steps_come_from_the_registry(stack, full_audit):
    done, run = full_audit
    kids = [stack.job(k) for k in done["children"]]
    assert [k["step_key"] for k in kids] == ["scan_init", "attack", "scan_selected", "scan_final", "metrics",
                                             "visualize", "control_attack", "control_scan", "control_metrics"]
    kinds = {k["kind"]: k for k in stack.get("/api/v1/job-kinds").json()}
    labels = {s["key"]: s["label"] for s in kinds["audit"]["steps"]}
    assert [k["label"] for k in kids] == [labels[k["step_key"]] for k in kids]
    assert all(k["status"] == "succeeded" for k in kids)
    assert {k["run_id"] for k in kids[6:]} == {run["control_run_id"]} != {done["run_id"]}
    # the form reads the attack defaults from the registry, which reads them from the engine
    from fvaudit.engine.attack.defaults import ATTACK_DEFAULTS

    d = kinds["audit"]["defaults"]["attack"]
    assert {k: d[k] for k in ATTACK_DEFAULTS} == ATTACK_DEFAULTS
    assert kinds["audit"]["defaults"]["control"] is True and kinds["audit"]["defaults"]["visualize"] is True


def test_attack_changes_topk_more_than_its_alpha_zero_control(stack, full_audit):
    """The α = 0 baseline with the same settings ran (its own run), and the attack moved the top-k more."""
    done, run = full_audit
    rows = {(r["layer"], r["state"]): r for r in run["rows"]}
    assert set(rows) == {("relu1", "selected"), ("relu1", "final"), ("relu1", "control")}
    sel, fin, ctl = rows[("relu1", "selected")], rows[("relu1", "final")], rows[("relu1", "control")]
    assert sel["step"] == fin["step"] == 20 and not fin["over_budget"]   # the budget admits the last state
    assert sel["run_id"] == done["run_id"] and ctl["run_id"] == run["control_run_id"]
    control = stack.get(f"/api/v1/runs/{run['control_run_id']}").json()
    assert control["attack"]["kind"] == "finetune" and control["attack"]["alpha"] == 0.0
    assert {k: v for k, v in control["attack"].items() if k not in ("kind", "alpha")} == \
        {k: v for k, v in run["attack"].items() if k not in ("kind", "alpha")}
    assert control["alpha_trajectory"] and all(e["alpha_after"] == 0.0 for e in control["alpha_trajectory"])
    assert ctl["topk_overlap"] == control["rows"][0]["topk_overlap"]
    assert sel["topk_overlap"] < ctl["topk_overlap"] and sel["kendall_tau"] < ctl["kendall_tau"]
    assert sel["clip_delta"] > ctl["clip_delta"]
    # every drop says how many images it was measured on: the full validation set
    assert sel["acc_n_images"] == ctl["acc_n_images"] == 400
    # the selected row's values are the means over the run's own unit rows
    units = _units(stack, done["run_id"])
    for m in METRICS:
        assert sel[m] == pytest.approx(_mean(u[m] for u in units if u["attacked"]), abs=1e-12), m


def test_labels_before_and_in_both_states_and_the_flip_rates_are_stored(stack, full_audit, db_env):
    """Issue 22: every unit's class-concept label under θ_init, the selected and the final state,
    recomputed here from the unit's stored top-k and labels; each row's flip rate is the share of
    attacked units whose label changed, and the α = 0 control's row has its own."""
    from scipy.stats import hypergeom
    from sqlalchemy import select

    from fvaudit.db.session import session_scope
    from fvaudit.db.tables import UnitResult
    from fvaudit.engine.data.images import FASHION_MNIST_CLASSES

    done, run = full_audit
    with session_scope() as db:
        units = db.execute(select(UnitResult.unit, UnitResult.attacked, UnitResult.dead, UnitResult.topk,
                                  UnitResult.extra).where(UnitResult.run_id == done["run_id"],
                                                          UnitResult.layer == "relu1")).all()
    assert len(units) == 32
    flips = {"selected": 0, "final": 0}
    attacked = 0
    for unit, is_attacked, dead, topk, extra in units:
        labels = extra["labels"]
        assert set(labels) == {"before", "selected", "final"}
        if dead:
            assert all(v["label"] is None for v in labels.values())
            continue
        for key, state in (("before", "before"), ("selected", "after"), ("final", "final")):
            lab = labels[key]
            shown = topk["val"][state]["labels"]             # the gallery's images' classes
            # the stack's 400 validation images are a stratified sample: 40 of each class, so the most
            # enriched class is the most frequent one (ties: the lower index), at P(X ≥ count)
            count = max(shown.count(c) for c in range(10))
            assert lab["label"] == min(c for c in range(10) if shown.count(c) == count), (unit, key, shown)
            assert lab["share"] == pytest.approx(count / len(shown)) and lab["name"] == FASHION_MNIST_CLASSES[lab["label"]]
            assert lab["p_value"] == pytest.approx(hypergeom.sf(count - 1, 400, 40, len(shown)), rel=1e-9)
        if is_attacked:
            attacked += 1
            for st in flips:
                flips[st] += labels[st]["label"] != labels["before"]["label"]
    rows = {(r["layer"], r["state"]): r for r in run["rows"]}
    for st in flips:
        assert rows[("relu1", st)]["label_flip_rate"] == pytest.approx(flips[st] / attacked)
    # the exports carry them: every state's label in the JSON, before → the main state's in the CSV
    by_unit = {u: extra["labels"] for u, _, _, _, extra in units}
    exported = {u["unit"]: u["labels"] for u in _units(stack, done["run_id"]) if u["layer"] == "relu1"}
    assert exported == by_unit
    lines = stack.get(f"/api/v1/runs/{done['run_id']}/export.csv").text.strip().splitlines()
    head = lines[0].split(",")
    scores_cols = [f"{m}_{s}" for m in ("clarity", "polysemanticity", "redundancy") for s in ("before", "after")]
    assert head[-8:] == ["label_before", "label_after", *scores_cols]
    scores = {u["unit"]: u["scores"] for u in _units(stack, done["run_id"]) if u["layer"] == "relu1"}
    for line in lines[1:]:
        cells = line.split(",")
        if cells[1] == "relu1":
            lab = by_unit[int(cells[2])]
            assert cells[-8:-6] == [lab["before"]["name"] or "", lab["selected"]["name"] or ""]
            sc = scores[int(cells[2])]
            if sc is None:                      # a dead unit has no top-k embeddings to score
                assert cells[-6:] == [""] * 6
            else:                               # SemanticLens scores (issue 22), before and in the main state
                want = [sc[st][m] for m in ("clarity", "polysemanticity", "redundancy") for st in ("before", "selected")]
                assert [float(c) for c in cells[-6:]] == pytest.approx(want)
    assert rows[("relu1", "control")]["label_flip_rate"] is not None
    assert rows[("relu1", "selected")]["label_flip_rate"] >= rows[("relu1", "control")]["label_flip_rate"]


def test_label_rows_for_both_states_and_the_label_search(stack, full_audit, db_env):
    """Issue 22: the metrics job writes every live unit's label in each state (before, selected,
    final) as a searchable row; GET /units?q= finds them by prefix across the caller's runs (a share
    link: its run only), with filters, each hit linking to its unit page with a thumbnail."""
    import httpx
    from sqlalchemy import select

    from fvaudit.db.session import session_scope
    from fvaudit.db.tables import UnitLabel

    done, run = full_audit
    rid = done["run_id"]
    by_unit = {u["unit"]: u["labels"] for u in _units(stack, rid) if u["layer"] == "relu1"}
    with session_scope() as db:
        rows = db.scalars(select(UnitLabel).where(UnitLabel.run_id == rid, UnitLabel.layer == "relu1")).all()
        rows = [(r.unit, r.state, r.label, r.label_key, r.score, r.changed, r.attacked, r.model_id) for r in rows]
    live = [u for u, lab in by_unit.items() if lab["before"]["label"] is not None]
    # offline the embedder is the stand-in (no text tower): the run says CLIP-Dissect is unavailable
    # and stores no CLIP-Dissect label, never a fake one
    assert run["layer_info"]["relu1"]["clip_dissect"].startswith("unavailable:")
    with session_scope() as db:
        assert not db.scalars(select(UnitLabel).where(UnitLabel.run_id == rid,
                                                      UnitLabel.describer == "clip-dissect")).all()
    assert sorted((u, st) for u, st, *_ in rows) == sorted((u, st) for u in live for st in ("before", "selected", "final"))
    for u, st, label, key, score, changed, attacked, model_id in rows:
        lab = by_unit[u][st]
        assert label == lab["name"] and key == label.lower() and score == pytest.approx(lab["share"])
        assert changed == (st != "before" and lab["label"] != by_unit[u]["before"]["label"])
        assert model_id == run["model_id"]
    # search: a label that exists, by a lower-case prefix of its name
    name = max(rows, key=lambda r: r[4])[2]
    want = sorted((u, st) for u, st, label, *_ in rows if label == name)
    r = stack.get("/api/v1/units", params={"q": name[:3].lower(), "run_id": rid, "limit": 500})
    assert r.status_code == 200, r.text
    hits = r.json()
    got = sorted((h["unit"], h["state"]) for h in hits if h["label"] == name and h["layer"] == "relu1")
    assert got == want and all(h["label"].lower().startswith(name[:3].lower()) for h in hits)
    assert int(r.headers["X-Total-Count"]) == len(hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    h = hits[0]
    assert h["run_name"] == run["name"] and h["unit_path"] == f"/runs/{rid}/layers/{h['layer']}/units/{h['unit']}"
    assert stack.get(h["thumb_url"], who=None).status_code == 200
    # filters: only labels the attack changed, in one state
    changed = stack.get("/api/v1/units", params={"q": name[:3], "run_id": rid, "state": "selected",
                                                 "changed": "true", "limit": 500}).json()
    assert sorted(x["unit"] for x in changed if x["label"] == name) == sorted(
        u for u, st, label, _, _, ch, *_ in rows if st == "selected" and ch and label == name)
    # another user sees none of it; a share link sees its run only; bad queries are 422 naming q
    assert [x for x in stack.get("/api/v1/units", params={"q": name[:3]}, who="bob").json() if x["run_id"] == rid] == []
    share = stack.post(f"/api/v1/runs/{rid}/shares").json()
    anon = httpx.Client(base_url=stack.base, timeout=30)
    shared = anon.get("/api/v1/units", params={"q": name[:3], "share": share["token"], "limit": 500}).json()
    assert shared and {x["run_id"] for x in shared} == {rid}
    assert anon.get(shared[0]["thumb_url"]).status_code == 200
    assert anon.get("/api/v1/units", params={"q": "bag"}).status_code == 401
    for bad in ("", " ", "x" * 201):
        r = stack.get("/api/v1/units", params={"q": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "q"], (bad, r.text)
    r = stack.get("/api/v1/units")                     # nothing to search and nothing to browse
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "q"], r.text
    # browsing one run's labels (no q): every live unit of relu1 before the attack, by unit
    browse = stack.get("/api/v1/units", params={"run_id": rid, "layer": "relu1", "state": "before", "sort": "unit",
                                                "limit": 500}).json()
    assert [x["unit"] for x in browse] == sorted(live)
    by_label = stack.get("/api/v1/units", params={"run_id": rid, "layer": "relu1", "state": "before",
                                                  "sort": "label", "limit": 500}).json()
    assert [x["label"].lower() for x in by_label] == sorted(x["label"].lower() for x in browse)


def test_synthetic_step_stores_images_rows_and_measures(stack, full_audit, db_env):
    from sqlalchemy import func, select

    from fvaudit.db.tables import SyntheticImage
    from fvaudit.db.session import session_scope

    done, run = full_audit
    vis = stack.job(done["children"][5])
    assert vis["kind"] == "visualize" and vis["result"]["images"] == 32 * 2 * 2
    with session_scope() as db:
        rows = db.execute(select(SyntheticImage.state, func.count(), func.min(SyntheticImage.seed),
                                 func.max(SyntheticImage.seed))
                          .where(SyntheticImage.run_id == done["run_id"]).group_by(SyntheticImage.state)).all()
    assert sorted(tuple(r) for r in rows) == [("init", 64, 0, 1), ("selected", 64, 0, 1)]
    syn = run["synthetic"]["relu1"]
    assert len(syn["units"]) == 32
    units = {u["unit"]: u for u in _units(stack, done["run_id"])}
    for u in syn["units"]:
        assert u["natural_clip_delta"] == units[u["unit"]]["clip_delta"]
        assert u["synthetic_clip_delta"] is not None and math.isfinite(u["synthetic_clip_delta"])
        assert u["ns_agreement"] is not None and math.isfinite(u["ns_agreement"])
    att = [u for u in syn["units"] if u["attacked"]]
    for m in ("natural_clip_delta", "synthetic_clip_delta", "synthetic_transfer", "ns_agreement"):
        assert syn["means"][m] == pytest.approx(_mean(u[m] for u in att), abs=1e-12), m
    sel = next(r for r in run["rows"] if r["state"] == "selected")
    assert sel["synthetic_clip_delta"] == pytest.approx(syn["means"]["synthetic_clip_delta"], abs=1e-12)
    assert any(u["synthetic_clip_delta"] > 0 for u in att)        # the weights changed: so did some images
    # the unit page: the same seeds before and after, each a PNG at the model's input size
    unit = max(att, key=lambda u: u["synthetic_clip_delta"])["unit"]
    d = stack.get(f"/api/v1/runs/{done['run_id']}/layers/relu1/units/{unit}").json()
    s = d["synthetic"]
    assert [i["seed"] for i in s["before"]] == [i["seed"] for i in s["after"]] == [0, 1]
    assert (s["objective"], s["steps"], s["size"]) == ("score", 8, 28)
    mine = next(u for u in syn["units"] if u["unit"] == unit)
    assert [s[m] for m in ("synthetic_clip_delta", "synthetic_transfer", "ns_agreement")] == \
        [mine[m] for m in ("synthetic_clip_delta", "synthetic_transfer", "ns_agreement")]
    assert units[unit]["synthetic_clip_delta"] == mine["synthetic_clip_delta"]      # in the export too
    from PIL import Image

    pixels = []
    for img in (s["before"][0], s["after"][0]):
        r = stack.get(img["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        im = Image.open(io.BytesIO(r.content))
        assert im.size == (28, 28)
        pixels.append(np.asarray(im))
    assert not np.array_equal(*pixels)          # same seed, different weights
    assert stack.get(s["before"][0]["url"], who="bob").status_code == 404     # a private run's images
    assert stack.get(s["before"][0]["url"], who=None).status_code == 404


def test_metrics_rerun_keeps_the_synthetic_references(stack, full_audit):
    """A metrics job writing into the same run upserts its columns: synthetic data stays."""
    done, run = full_audit
    kids = [stack.job(k) for k in done["children"]]
    by = {k["step_key"]: k for k in kids}
    before = stack.get(f"/api/v1/runs/{done['run_id']}/layers/relu1/units/3").json()
    r = stack.post("/api/v1/jobs", {"kind": "metrics", "spec": {
        "before_scan_job_id": by["scan_init"]["id"], "after_scan_job_id": by["scan_selected"]["id"],
        "val_set_id": stack.ids["val"], "train_set_id": stack.ids["train"], "attack_job_id": by["attack"]["id"],
        "embedder": "none"}})
    assert r.status_code == 201, r.text
    assert r.json()["run_id"] == done["run_id"]
    assert stack.wait_job(r.json()["id"])["status"] == "succeeded"
    after = stack.get(f"/api/v1/runs/{done['run_id']}/layers/relu1/units/3").json()
    assert after["metrics"]["clip_delta"] is None and after["metrics"]["kendall_tau"] == before["metrics"]["kendall_tau"]
    assert after["synthetic"] is not None
    assert [i["url"] for i in after["synthetic"]["after"]] == [i["url"] for i in before["synthetic"]["after"]]
    assert after["synthetic"]["synthetic_clip_delta"] == before["synthetic"]["synthetic_clip_delta"]


def test_two_layer_audit_has_a_row_per_layer_and_state(stack):
    """Several layers from one request: a selected and a final row per layer plus "all" rows,
    the final flagged when over the budget, unit pages per layer."""
    spec = stack.audit_spec(layers=["relu1", "relu2"])
    r = stack.post("/api/v1/jobs", {"kind": "audit", "spec": spec})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["attack"]["layers"] == ["relu1", "relu2"]
    done = stack.wait_job(r.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done
    run = stack.get(f"/api/v1/runs/{done['run_id']}").json()
    assert run["layers"] == ["relu1", "relu2"] and run["control_run_id"] is None and run["synthetic"] is None
    rows = {(r["layer"], r["state"]): r for r in run["rows"]}
    assert set(rows) == {(l, s) for l in ("relu1", "relu2", "all") for s in ("selected", "final")}
    acc = run["accuracy"]
    budget = run["attack"]["acc_budget_pp"]
    for l in ("relu1", "relu2", "all"):
        sel, fin = rows[(l, "selected")], rows[(l, "final")]
        assert sel["step"] == acc["selected_step"] and fin["step"] == acc["steps"] == 20
        assert sel["over_budget"] is False and fin["over_budget"] is (acc["last"] - acc["init"] < -budget)
        assert sel["delta_acc"] == pytest.approx(acc["final"] - acc["init"]) and sel["delta_acc"] >= -budget
        assert fin["delta_acc"] == pytest.approx(acc["last"] - acc["init"])
        assert sel["acc_n_images"] == fin["acc_n_images"] == 400
    assert [t["layer"] for t in run["table"]] == ["relu1", "relu2"]
    units = _units(stack, done["run_id"])
    assert sum(u["layer"] == "relu1" for u in units) == 32 and sum(u["layer"] == "relu2" for u in units) == 64
    for m in METRICS:     # "all" = the mean over every attacked unit of every layer (selected state)
        assert rows[("all", "selected")][m] == pytest.approx(_mean(u[m] for u in units if u["attacked"]), abs=1e-12)
        per_layer = [rows[(l, "final")][m] for l in ("relu1", "relu2")]
        assert min(per_layer) - 1e-12 <= rows[("all", "final")][m] <= max(per_layer) + 1e-12
    for layer, n in (("relu1", 32), ("relu2", 64)):
        page = stack.get(f"/api/v1/runs/{done['run_id']}/layers/{layer}/units", params={"page_size": 100}).json()
        assert page["total"] == n
        assert stack.get(f"/api/v1/runs/{done['run_id']}/layers/{layer}/units/{n - 1}").json()["layer"] == layer


def test_visualize_alone_on_a_model_and_the_model_browse(stack):
    spec = {"model_id": stack.ids["model"], "layers": ["relu2"], "units": [0, 1, 2], "n_synth": 2, "steps": 4,
            "embedder": "none"}
    r = stack.post("/api/v1/jobs", {"kind": "visualize", "spec": spec})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["label"] == "synthetic visualization" and job["run_id"] is None
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["images"] == 6 and done["result"]["state"] is None
    browse = stack.get(f"/api/v1/models/{stack.ids['model']}/synthetic", who="bob").json()
    relu2 = next(l for l in browse["layers"] if l["layer"] == "relu2")
    assert [(u["unit"], u["seed"], u["job_id"]) for u in relu2["units"]] == [(0, 0, job["id"]), (1, 0, job["id"]),
                                                                           (2, 0, job["id"])]
    one = stack.get(f"/api/v1/models/{stack.ids['model']}/synthetic/relu2/1", who="bob").json()
    mine = [i for i in one["images"] if i["job_id"] == job["id"]]
    assert [(i["seed"], i["state"], i["objective"], i["steps"], i["size"]) for i in mine] == [
        (0, "init", "score", 4, 28), (1, "init", "score", 4, 28)]
    png = stack.get(mine[0]["url"], who="bob")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # allowed per request (token or share link): revalidated on every reuse, never kept a year
    assert png.headers["cache-control"] == "private, no-cache"
    assert httpx.get(stack.base + mine[0]["url"], headers={**stack.h("bob"), "If-None-Match": png.headers["etag"]},
                     timeout=30).status_code == 304
    assert httpx.get(stack.base + mine[0]["url"]).status_code == 404        # images need a user
    assert stack.get(f"/api/v1/models/{stack.ids['model']}/synthetic/relu2/9").status_code == 404
    for over, loc in (({"units": [0], "layers": ["relu1", "relu2"]}, ["body", "spec", "units"]),
                      ({"units": [64]}, ["body", "spec", "units", 0]),
                      ({"n_synth": 0}, ["body", "spec", "n_synth"]),
                      ({"objective": "max"}, ["body", "spec", "objective"]),
                      ({"weights_from": {"job_id": 999_999}}, ["body", "spec", "weights_from", "job_id"])):
        r = stack.post("/api/v1/jobs", {"kind": "visualize", "spec": {**spec, **over}})
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], (over, r.text)
