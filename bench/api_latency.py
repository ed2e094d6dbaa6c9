"""Latency of the per-unit detail endpoint under concurrent clients, against Postgres.

    python bench/api_latency.py                  # 50 clients, 3000 requests per endpoint
    python bench/api_latency.py --quick          # 50 clients, 600 requests per endpoint

Sets up a database of its own on 127.0.0.1:5432 (dropped at the end) with one finished
synthetic run (bench/_service.py: 128 units of relu3, top-10 before/after on a train and
a validation set, every metric, nearest units), starts the API (`fvaudit serve`, service
mode, one uvicorn process, Redis at 127.0.0.1:6379) and drives it with 50 concurrent
HTTP clients (httpx, asyncio, keep-alive) from this process. A failed request is
counted by kind (`errors_by_kind`: ReadError, RemoteProtocolError, http_500, ...), not
fatal; the exit status is 1 when any request failed.

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
import collections
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import ROOT, UNITS, bench_service, classify, percentile  # noqa: E402


async def drive(base: str, make_path, headers: dict, clients: int, total: int) -> dict:
    """``total`` requests from ``clients`` concurrent clients sharing one keep-alive pool.

    A failed request (connection reset, protocol error, timeout, non-200) is counted by
    kind in ``errors_by_kind`` and the run goes on; latency percentiles are over the
    requests that succeeded.
    """
    import httpx

    lat: list[float] = []
    errors: collections.Counter = collections.Counter()
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
        async def one_client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in counter:
                path = make_path(rng)
                t = time.perf_counter()
                try:
                    r = await client.get(path)
                    await r.aread()
                except httpx.HTTPError as exc:
                    errors[classify(exc)] += 1
                    continue
                if r.status_code != 200:
                    errors[classify(r.status_code)] += 1
                    continue
                lat.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    done = len(lat) + sum(errors.values())
    return {"requests": done, "ok": len(lat), "errors": sum(errors.values()), "errors_by_kind": dict(errors),
            "clients": clients, "seconds": round(wall, 3), "throughput_rps": round(done / wall, 1),
            "p50_ms": round(percentile(lat, 0.50), 2), "p95_ms": round(percentile(lat, 0.95), 2),
            "p99_ms": round(percentile(lat, 0.99), 2), "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "max_ms": round(max(lat), 2) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=3000, help="requests per endpoint")
    ap.add_argument("--quick", action="store_true", help="600 requests per endpoint")
    ap.add_argument("--broker", default=os.environ.get("FVAUDIT_BENCH_BROKER", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_latency.json")
    args = ap.parse_args()
    n = 600 if args.quick else args.requests
    with bench_service(args.broker) as svc:
        import httpx

        base, auth = svc.base, svc.headers
        unit_path = lambda rng: svc.unit_path(rng.randrange(UNITS))
        detail = httpx.get(base + unit_path(random.Random(0)), headers=auth).json()
        assert len(detail["topk"]["val"]["after"]) == 10, detail
        # warm-up: connections, caches, the token lookup
        asyncio.run(drive(base, unit_path, auth, args.clients, 200))
        asyncio.run(drive(base, lambda rng: "/api/v1/health", {}, args.clients, 200))
        results = {
            "baseline_health": asyncio.run(drive(base, lambda rng: "/api/v1/health", {}, args.clients, n)),
            "unit_detail": asyncio.run(drive(base, unit_path, auth, args.clients, n)),
            "unit_table": asyncio.run(drive(base, lambda rng: svc.table_path(rng.randrange(1, 4)), auth,
                                            args.clients, n)),
        }
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
        print(f"{label:44} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['throughput_rps']:8.0f} {r['errors']:6d}"
              + (f"  {r['errors_by_kind']}" if r["errors"] else ""))
    print(f"unit detail vs /health: p50 ×{ratio['p50']}, p95 ×{ratio['p95']}, throughput ×{ratio['throughput']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
