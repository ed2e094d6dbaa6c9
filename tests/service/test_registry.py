"""The job-kind registry, through the real schema generation and validation path.

A kind registered here (in the test process) appears in the OpenAPI schema of an app
built afterwards, in ``GET /job-kinds`` with its defaults, is validated with 422s that
name its fields, is written to the stack's Postgres database like any job, and is run
by the same runner (in this process, which knows the kind).

A new kind is one module end to end: the toy kind below names this very module as its
``routes``, and the app mounts the ``router`` defined here next to the kind."""
from __future__ import annotations

import pytest
from fastapi import APIRouter
from pydantic import Field

#: the toy kind's own endpoint (``ToyKind.routes`` names this module)
router = APIRouter(prefix="/toy-counts", tags=["toy"])


@router.get("/{job_id}", summary="A toy count's total")
def toy_total(job_id: int) -> dict:
    from fvaudit.db.tables import Job
    from fvaudit.db.session import session_scope

    with session_scope() as db:
        job = db.get(Job, job_id)
        return {"job_id": job_id, "kind": job.kind, "total": (job.result or {}).get("total")}


@pytest.fixture
def toy_kind(db_env):
    from fvaudit.jobs.registry import JobKind, StepInfo, Step, register_kind, unregister_kind
    from fvaudit.jobs.specs import DbId, LayerName, Strict
    from fvaudit.jobs.validate import check_layer, get_model

    class ToySpec(Strict):
        """Count the units of layers (a stand-in for a new analysis)."""

        model_id: DbId
        layers: list[LayerName] = Field(min_length=1, max_length=4)
        repeats: int = Field(3, ge=1, le=5, description="how many times to count")

    @register_kind
    class ToyKind(JobKind):
        name = "toy_count"
        title = "count units"
        description = "counts the units of layers"
        spec = ToySpec
        routes = __name__

        def check(self, db, user, spec):
            model = get_model(db, spec.model_id, ("spec", "model_id"))
            infos = [check_layer(model, l, ("spec", "layers", i)) for i, l in enumerate(spec.layers)]
            return spec.model_copy(update={"layers": [i["name"] for i in infos]})

        def run(self, spec, ctx):
            from fvaudit.db.tables import Model

            with ctx.session() as db:
                m = db.get(Model, spec.model_id)
                units = {i["name"]: i["units"] for i in m.layers if i["name"] in spec.layers}
            return {"units": units, "total": spec.repeats * sum(units.values())}

    class ToyChainSpec(Strict):
        model_id: DbId
        layers: list[LayerName] = Field(min_length=1)

    @register_kind
    class ToyChain(JobKind):
        """A chain built the same way as the audit: steps as data, each naming the one it waits for."""

        name = "toy_chain"
        title = "toy chain"
        spec = ToyChainSpec
        steps = (StepInfo("first", "first count"), StepInfo("second", "second count"))

        def runs(self, db, user, spec):
            from fvaudit.db.tables import Run

            run = Run(name="toy", owner_id=user.id, model_id=spec.model_id, layers=spec.layers)
            db.add(run)
            db.flush()
            return {"main": run}

        def expand(self, spec):
            return [Step("first", "toy_count", lambda ids: ToySpec(model_id=spec.model_id, layers=spec.layers)),
                    Step("second", "toy_count", lambda ids: ToySpec(model_id=spec.model_id, layers=spec.layers,
                                                                    repeats=1), after="first")]

    yield ToyKind
    unregister_kind("toy_count")
    unregister_kind("toy_chain")


def _client():
    from fastapi.testclient import TestClient

    from fvaudit.api.app import create_app

    return TestClient(create_app())


def test_registered_kind_is_in_the_schema_validated_and_run(toy_kind, stack):
    from fvaudit.jobs.runner import run_job

    c = _client()
    auth = {"Authorization": f"Bearer {stack.tokens['admin']}"}
    schema = c.get("/api/v1/openapi.json").json()
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = {o["$ref"].rsplit("/", 1)[1] for o in body["oneOf"]}
    assert {"ToyCountJobCreate", "ToyChainJobCreate", "AuditJobCreate", "VisualizeJobCreate"} <= refs
    assert body["discriminator"]["mapping"]["toy_count"].endswith("/ToyCountJobCreate")
    toy_schema = schema["components"]["schemas"]["ToySpec"]
    assert toy_schema["properties"]["repeats"]["maximum"] == 5
    kinds = {k["kind"]: k for k in c.get("/api/v1/job-kinds", headers=auth).json()}
    assert kinds["toy_count"]["defaults"] == {"repeats": 3} and kinds["toy_count"]["runnable"] is True
    assert kinds["toy_chain"]["chain"] is True and kinds["toy_chain"]["steps"] == [
        {"key": "first", "label": "first count"}, {"key": "second", "label": "second count"}]
    assert kinds["audit"]["defaults"]["attack"]["lr"] is not None     # the form's defaults come from here

    m = stack.ids["model"]
    for spec, loc in (({"model_id": m, "layers": ["relu1"], "repeats": 9}, ["body", "spec", "repeats"]),
                      ({"model_id": m, "layers": ["relu1"], "repeats": True}, ["body", "spec", "repeats"]),
                      ({"model_id": m, "layers": []}, ["body", "spec", "layers"]),
                      ({"model_id": m, "layers": ["relu1"], "extra": 1}, ["body", "spec", "extra"]),
                      ({"model_id": m, "layers": ["relu1", "nope"]}, ["body", "spec", "layers", 1]),
                      ({"model_id": 999_999, "layers": ["relu1"]}, ["body", "spec", "model_id"])):
        r = c.post("/api/v1/jobs", json={"kind": "toy_count", "spec": spec}, headers=auth)
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], (spec, r.json())
    # the kind's check normalises (a display label to the layer's name); the row keeps the typed spec
    r = c.post("/api/v1/jobs", json={"kind": "toy_count", "spec": {"model_id": m, "layers": ["conv1 (post-ReLU)"]}},
               headers=auth)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "toy_count" and job["label"] == "count units" and job["spec"]["layers"] == ["relu1"]
    assert job["spec"]["repeats"] == 3 and job["step_key"] is None
    assert run_job(job["id"], worker="test") == "succeeded"
    done = c.get(f"/api/v1/jobs/{job['id']}", headers=auth).json()
    assert done["status"] == "succeeded" and done["result"] == {"units": {"relu1": 32}, "total": 96}
    # the kind's own route, mounted by the app from the kind's ``routes`` module, in the schema too
    assert "/api/v1/toy-counts/{job_id}" in schema["paths"]
    assert c.get(f"/api/v1/toy-counts/{job['id']}").json() == {"job_id": job["id"], "kind": "toy_count", "total": 96}

    r = c.post("/api/v1/jobs", json={"kind": "toy_chain", "spec": {"model_id": m, "layers": ["relu1"]}}, headers=auth)
    assert r.status_code == 201, r.text
    chain = r.json()
    kids = [c.get(f"/api/v1/jobs/{k}", headers=auth).json() for k in chain["children"]]
    assert [(k["step_key"], k["label"], k["kind"]) for k in kids] == [("first", "first count", "toy_count"),
                                                                     ("second", "second count", "toy_count")]
    assert kids[1]["depends_on_id"] == kids[0]["id"] and kids[0]["depends_on_id"] is None
    assert run_job(kids[1]["id"], worker="test") == "skipped"      # waits for the first step
    assert run_job(kids[0]["id"], worker="test") == "succeeded"
    assert run_job(kids[1]["id"], worker="test") == "succeeded"
    chain = c.get(f"/api/v1/jobs/{chain['id']}", headers=auth).json()
    assert chain["status"] == "succeeded"
    assert c.get(f"/api/v1/jobs/{kids[1]['id']}", headers=auth).json()["result"]["total"] == 32


def test_unknown_kind_is_422_on_kind(stack):
    r = stack.post("/api/v1/jobs", {"kind": "toy_count", "spec": {}})     # not registered in the API process
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
