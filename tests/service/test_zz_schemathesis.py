"""Schemathesis over the whole OpenAPI: no 5xx, whatever the input.

Runs against an API process of its own on its own Postgres database (no worker: the
jobs it manages to create stay queued and never load the machine), seeded with the
demo model, two image sets and one finished (synthetic) run so that run/unit paths
(examples: run 1, layer relu1, unit 0) reach real rows. Phases: examples, coverage
(boundary values, NUL bytes, ...), fuzzing and stateful, within a time budget.
Set FVAUDIT_ST_SEED to replay a run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from svc import Stack, create_database, drop_database  # tests/service/svc.py

ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("fuzz")
    name, url = create_database("fvaudit_fuzz")
    st = Stack(tmp, url, redis_server)
    try:
        st.cli("db", "upgrade")
        st.tokens["admin"] = st.cli("token", "create", "--user", "fuzzer", "--admin", "--quiet").strip().splitlines()[-1]
        st.start_api()
        assert st.post("/api/v1/models", {"name": "demo", "registry_name": "fmnist-cnn"}).status_code == 201
        for split, limit in (("train", 600), ("test", 300)):
            assert st.post("/api/v1/image-sets", {"name": split, "source": f"fashion-mnist:{split}",
                                                  "limit": limit}).status_code == 201
        seed = ("from fvaudit.db.session import session_scope\n"
                "from fvaudit.db.seed import synthetic_run\n"
                "from fvaudit.db.tables import ImageSet\n"
                "with session_scope() as db:\n"
                "    synthetic_run(db, 1, 1, db.get(ImageSet, 1), db.get(ImageSet, 2), {'relu1': 32})\n")
        subprocess.run([sys.executable, "-c", seed], env=st.env, check=True, cwd=st.tmp)
        yield st
    finally:
        st.api.stop()
        drop_database(name)


class Canceller(threading.Thread):
    """Cancels every queued job the fuzzer creates (there is no worker), so a job's SSE
    stream, which lasts until the job ends, ends too instead of waiting for the timeout."""

    def __init__(self, st) -> None:
        super().__init__(daemon=True)
        self.st = st
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                for j in self.st.get("/api/v1/jobs", params={"status": "queued", "top_level": "true"}).json():
                    self.st.post(f"/api/v1/jobs/{j['id']}/cancel")
            except Exception:
                pass


@pytest.mark.timeout(600)
def test_no_server_errors_anywhere_in_the_openapi(fuzz_stack):
    st = fuzz_stack
    canceller = Canceller(st)
    canceller.start()
    assert st.get("/api/v1/runs/1/layers/relu1/units/0").status_code == 200
    args = [str(ST) if ST.exists() else "st", "run", f"{st.base}/api/v1/openapi.json", "--checks", "not_a_server_error",
            "--header", f"Authorization: Bearer {st.tokens['admin']}", "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", os.environ.get("FVAUDIT_ST_EXAMPLES", "8"), "--max-time",
            os.environ.get("FVAUDIT_ST_MAX_TIME", "60"), "--workers", "1", "--no-color",
            "--request-timeout", "30", "--generation-database", "none"]
    if os.environ.get("FVAUDIT_ST_SEED"):
        args += ["--seed", os.environ["FVAUDIT_ST_SEED"]]
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=560, cwd=st.tmp)
    finally:
        canceller.stop.set()
    out = res.stdout + res.stderr
    (st.tmp / "schemathesis.txt").write_text(out)
    assert res.returncode == 0, out[-6000:] + "\n--- api log ---\n" + st.api.tail(6000)
    assert "Server error" not in out
