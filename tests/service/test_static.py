"""The built dashboard is served at / with an SPA fallback; /api stays JSON."""
from __future__ import annotations

from fastapi.testclient import TestClient


def test_spa_fallback(db_env, tmp_path, monkeypatch):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>fvaudit</title>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    monkeypatch.setenv("FVAUDIT_FRONTEND_DIST", str(dist))
    monkeypatch.setenv("FVAUDIT_REAPER_INTERVAL", "0")
    from fvaudit.config import reset_settings

    reset_settings()
    from fvaudit.api.app import create_app

    with TestClient(create_app()) as c:
        for path in ("/", "/runs/3/layers/relu1/units/7", "/jobs"):
            r = c.get(path)
            assert r.status_code == 200 and "fvaudit" in r.text, path
        js = c.get("/assets/app.js")
        assert js.status_code == 200 and "immutable" in js.headers["cache-control"]
        assert c.get("/../../etc/passwd").text.startswith("<!doctype")
        r = c.get("/api/v1/no-such-thing")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert c.get("/api/v1/health").json()["database"] == "ok"
