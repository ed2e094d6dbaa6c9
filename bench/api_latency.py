"""Latency of the per-unit detail endpoint under concurrent clients, against Postgres.

    python bench/api_latency.py                  # 50 clients, 3000 requests per endpoint
    python bench/api_latency.py --quick          # 50 clients, 600 requests per endpoint

Sets up a database of its own on 127.0.0.1:5432 (dropped at the end): the demo model,
two Fashion-MNIST image sets and one finished run whose rows have the shape the metrics
job writes (128 units of relu3, top-10 before/after on a train and a validation set,
every metric, nearest units). It starts the API (`fvaudit serve`, service mode, one
uvicorn process, Redis at 127.0.0.1:6379) and drives it with 50 concurrent HTTP clients
(httpx, asyncio, keep-alive) from this process.

Measured, same clients, same server, same run:
  * baseline  GET /api/v1/health            (one trivial SQL query + a cached broker ping)
  * target    GET /api/v1/runs/{id}/layers/relu3/units/{unit}   (random unit, API token)
  * extra     GET /api/v1/runs/{id}/layers/relu3/units?sort=clip_delta&order=desc
Prints p50/p95/p99 and throughput of each, and the target's ratios to the baseline;
writes bench/results/api_latency.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
PG_ADMIN = os.environ.get("FVAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg(sql: str) -> str:
    import psycopg

    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        conn = psycopg.connect(PG_ADMIN.replace("postgres@", ""), autocommit=True, connect_timeout=5)
    with conn:
        cur = conn.execute(sql)
        return conn.info.user if cur.description is None else str(cur.fetchone()[0])


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def drive(base: str, make_path, headers: dict, clients: int, total: int) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
        async def one_client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            for _ in counter:
                path = make_path(rng)
                t = time.perf_counter()
                r = await client.get(path)
                await r.aread()
                lat.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "clients": clients, "seconds": round(wall, 3),
            "throughput_rps": round(len(lat) / wall, 1), "p50_ms": round(percentile(lat, 0.50), 2),
            "p95_ms": round(percentile(lat, 0.95), 2), "p99_ms": round(percentile(lat, 0.99), 2),
            "mean_ms": round(statistics.fmean(lat), 2), "max_ms": round(max(lat), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=3000, help="requests per endpoint")
    ap.add_argument("--quick", action="store_true", help="600 requests per endpoint")
    ap.add_argument("--broker", default=os.environ.get("FVAUDIT_BENCH_BROKER", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_latency.json")
    args = ap.parse_args()
    n = 600 if args.quick else args.requests

    db = f"fvaudit_bench_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    user = pg(f'CREATE DATABASE "{db}"')
    data = Path(os.environ.get("TMPDIR", "/tmp")) / db
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend"),
           "FVAUDIT_DATABASE_URL": f"postgresql+psycopg://{user}@127.0.0.1:5432/{db}",
           "FVAUDIT_BROKER_URL": args.broker, "FVAUDIT_CELERY_QUEUE": f"bench-{db}", "FVAUDIT_DATA_DIR": str(data),
           "FVAUDIT_CACHE_DIR": os.environ.get("FVAUDIT_CACHE_DIR", str(ROOT / ".fvaudit-cache" / "bench")),
           "FVAUDIT_REAPER_INTERVAL": "5", "HF_HUB_OFFLINE": "1", "FVAUDIT_SECRET_KEY": uuid.uuid4().hex}
    for k in ("DATABASE_URL", "BROKER_URL", "CELERY_BROKER_URL", "DATA_DIR"):
        env.pop(k, None)
    api = None
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("FVAUDIT_")})
        from fvaudit.config import reset_settings

        reset_settings()
        from fvaudit.db import migrate

        migrate.upgrade()
        from fvaudit.api.registration import register_image_set, register_model
        from fvaudit.api.security import create_token
        from fvaudit.db.seed import synthetic_run
        from fvaudit.db.session import dispose_all, session_scope

        with session_scope() as s:
            owner, token = create_token(s, "bench", admin=False)
            model = register_model(s, owner.id, "demo", "fmnist-cnn")
            train = register_image_set(s, owner.id, "train", "fashion-mnist:train", 10000)
            val = register_image_set(s, owner.id, "val", "fashion-mnist:test", 2000)
            run = synthetic_run(s, owner.id, model.id, train, val, {"relu3": 128})
            run_id = run.id
        dispose_all()
        api = subprocess.Popen([sys.executable, "-m", "fvaudit.cli", "serve", "--port", str(port), "--no-upgrade",
                                "--log-level", "warning"], env=env, cwd=ROOT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(200):
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        auth = {"Authorization": f"Bearer {token}"}
        unit_path = lambda rng: f"/api/v1/runs/{run_id}/layers/relu3/units/{rng.randrange(128)}"
        detail = httpx.get(base + unit_path(random.Random(0)), headers=auth).json()
        assert len(detail["topk"]["val"]["after"]) == 10, detail
        # warm-up: connections, caches, the token lookup
        asyncio.run(drive(base, unit_path, auth, args.clients, 200))
        asyncio.run(drive(base, lambda rng: "/api/v1/health", {}, args.clients, 200))
        results = {
            "baseline_health": asyncio.run(drive(base, lambda rng: "/api/v1/health", {}, args.clients, n)),
            "unit_detail": asyncio.run(drive(base, unit_path, auth, args.clients, n)),
            "unit_table": asyncio.run(drive(
                base, lambda rng: f"/api/v1/runs/{run_id}/layers/relu3/units?sort=clip_delta&order=desc&page="
                                  f"{rng.randrange(1, 4)}&page_size=50", auth, args.clients, n)),
        }
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        try:
            from fvaudit.db.session import dispose_all

            dispose_all()
        except Exception:
            pass
        pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    b, u = results["baseline_health"], results["unit_detail"]
    ratio = {"p50": round(u["p50_ms"] / b["p50_ms"], 2), "p95": round(u["p95_ms"] / b["p95_ms"], 2),
             "throughput": round(u["throughput_rps"] / b["throughput_rps"], 2)}
    out = {"benchmark": "per-unit detail endpoint latency under concurrent clients", "clients": args.clients,
           "requests_per_endpoint": n, "server": "fvaudit serve (1 uvicorn process), Postgres 15 on 127.0.0.1",
           "baseline": "GET /api/v1/health (one SQL round trip + cached broker ping), same clients and server",
           "results": results, "unit_detail_vs_baseline": ratio,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "payload_bytes": len(json.dumps(detail))}
    print(f"{args.clients} concurrent clients, {n} requests per endpoint, one API process, Postgres")
    print(f"{'endpoint':44} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for name, label in (("baseline_health", "baseline: GET /health"),
                        ("unit_detail", "GET /runs/{id}/layers/relu3/units/{unit}"),
                        ("unit_table", "GET /runs/{id}/layers/relu3/units?sort=...")):
        r = results[name]
        print(f"{label:44} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['throughput_rps']:8.0f} {r['errors']:6d}")
    print(f"unit detail vs /health: p50 ×{ratio['p50']}, p95 ×{ratio['p95']}, throughput ×{ratio['throughput']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0 if u["errors"] == 0 and b["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
