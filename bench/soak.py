"""Soak: keep-alive clients on the unit page's endpoints for minutes, against Postgres.

    python bench/soak.py                          # 10 minutes, 50 clients
    python bench/soak.py --duration 60            # one minute
    python bench/soak.py --server-keep-alive 5    # the old uvicorn default: reproduces the resets

Each of ``--clients`` clients is a browser tab: its own httpx connection (keep-alive,
httpx's default 5 s idle expiry), a loop of GET unit detail (70 %) and GET unit table
(30 %) on one synthetic run (bench/_service.py: 128 units, top-10 galleries), and now
and then a pause of 4.5-5.5 s (``--idle-prob``), the time a user looks at a page. Such
a pause is what exposed the resets: uvicorn closed idle connections after 5 s, the
client's pool kept them for 5 s, and a request sent into a connection the server was
closing came back as ``httpx.ReadError`` (connection reset). fvaudit now keeps idle
connections for ``FVAUDIT_KEEP_ALIVE_SECONDS`` (75 s), beyond every client's expiry.

Per minute: requests, errors by kind, p50/p95 latency, the server's resident memory and
the machine's load average. Baseline, same clients and server, measured first:
GET /api/v1/health for ``--baseline-seconds``; the soak's p50/p95 are printed as ratios
to it. Writes bench/results/soak.json (``--out``).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import ROOT, UNITS, bench_service, classify, percentile, rss_mb  # noqa: E402


class Minute:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.errors: collections.Counter = collections.Counter()

    def out(self, i: int, rss: float | None, load: float) -> dict:
        return {"minute": i, "requests": len(self.lat) + sum(self.errors.values()), "ok": len(self.lat),
                "errors": dict(self.errors), "p50_ms": round(percentile(self.lat, 0.5), 1),
                "p95_ms": round(percentile(self.lat, 0.95), 1), "server_rss_mb": rss, "load1": round(load, 2)}


async def run_clients(svc, clients: int, seconds: float, pick, idle_prob: float = 0.0,
                      idle: tuple[float, float] = (4.5, 5.5), on_sample=None) -> tuple[list[Minute], float]:
    """``clients`` tasks, each with its own keep-alive connection, for ``seconds``;
    results bucketed by minute since the start. ``on_sample(minute)`` runs at each minute."""
    import httpx

    t0 = time.perf_counter()
    stop = t0 + seconds
    minutes: dict[int, Minute] = collections.defaultdict(Minute)

    async def one(seed: int) -> None:
        rng = random.Random(seed)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)   # keepalive_expiry: httpx's 5 s
        async with httpx.AsyncClient(base_url=svc.base, headers=svc.headers, limits=limits, timeout=60) as client:
            while (now := time.perf_counter()) < stop:
                if idle_prob and rng.random() < idle_prob:
                    await asyncio.sleep(min(rng.uniform(*idle), max(0.0, stop - now)))
                    continue
                path = pick(rng)
                t = time.perf_counter()
                bucket = minutes[int((t - t0) // 60)]
                try:
                    r = await client.get(path)
                    await r.aread()
                except httpx.HTTPError as exc:          # ReadError, RemoteProtocolError, timeouts ...
                    bucket.errors[classify(exc)] += 1
                    continue
                if r.status_code == 200:
                    bucket.lat.append((time.perf_counter() - t) * 1000)
                else:
                    bucket.errors[classify(r.status_code)] += 1

    async def sampler() -> None:
        i = 0
        while on_sample is not None and time.perf_counter() < stop:
            on_sample(i)
            i += 1
            await asyncio.sleep(max(0.0, t0 + 60 * i - time.perf_counter()))

    await asyncio.gather(sampler(), *(one(i) for i in range(clients)))
    return [minutes[i] for i in sorted(minutes)], time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds of soak (default 600)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--idle-prob", type=float, default=0.02, help="chance a client pauses 4.5-5.5 s before a request")
    ap.add_argument("--baseline-seconds", type=float, default=20)
    ap.add_argument("--server-keep-alive", type=float, default=None,
                    help="FVAUDIT_KEEP_ALIVE_SECONDS for the server (default: fvaudit's, 75 s)")
    ap.add_argument("--broker", default=os.environ.get("FVAUDIT_BENCH_BROKER", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = ap.parse_args()
    extra = {} if args.server_keep_alive is None else {"FVAUDIT_KEEP_ALIVE_SECONDS": str(args.server_keep_alive)}

    def pick(rng: random.Random) -> str:
        return svc.unit_path(rng.randrange(UNITS)) if rng.random() < 0.7 else svc.table_path(rng.randrange(1, 4))

    with bench_service(args.broker, extra) as svc:
        from fvaudit.config import Settings

        keep_alive = Settings().keep_alive_seconds           # the server's environment, set by bench_service
        base_min, base_s = asyncio.run(run_clients(svc, args.clients, args.baseline_seconds,
                                                   lambda rng: "/api/v1/health"))
        base_lat = [x for m in base_min for x in m.lat]
        baseline = {"requests": len(base_lat), "errors": dict(sum((m.errors for m in base_min), collections.Counter())),
                    "p50_ms": round(percentile(base_lat, 0.5), 1), "p95_ms": round(percentile(base_lat, 0.95), 1),
                    "throughput_rps": round(len(base_lat) / base_s, 1)}
        samples: dict[int, tuple[float | None, float]] = {}
        samples[-1] = (rss_mb(svc.pid), os.getloadavg()[0])

        def on_sample(i: int) -> None:
            samples[i] = (rss_mb(svc.pid), os.getloadavg()[0])

        minutes, wall = asyncio.run(run_clients(svc, args.clients, args.duration, pick, args.idle_prob,
                                                on_sample=on_sample))
        end = (rss_mb(svc.pid), os.getloadavg()[0])
    per_minute = []
    for i, m in enumerate(minutes):
        rss, load = samples.get(i + 1, end)             # memory and load at the end of minute i
        per_minute.append(m.out(i, rss, load))
    lat = [x for m in minutes for x in m.lat]
    errors = sum((m.errors for m in minutes), collections.Counter())
    total = len(lat) + sum(errors.values())
    rss_values = [p["server_rss_mb"] for p in per_minute if p["server_rss_mb"] is not None]
    totals = {"requests": total, "ok": len(lat), "errors": sum(errors.values()), "errors_by_kind": dict(errors),
              "throughput_rps": round(total / wall, 1), "p50_ms": round(percentile(lat, 0.5), 1),
              "p95_ms": round(percentile(lat, 0.95), 1), "server_rss_mb_start": samples[-1][0],
              "server_rss_mb_end": end[0],
              "server_rss_mb_growth_after_minute_1": round(rss_values[-1] - rss_values[0], 1) if rss_values else None}
    ratio = {"p50": round(totals["p50_ms"] / baseline["p50_ms"], 2), "p95": round(totals["p95_ms"] / baseline["p95_ms"], 2)}
    out = {"benchmark": "soak: keep-alive clients on the unit detail and unit table endpoints",
           "duration_s": args.duration, "clients": args.clients,
           "mix": {"unit_detail": 0.7, "unit_table": 0.3},
           "idle": {"probability_per_request": args.idle_prob, "seconds": [4.5, 5.5],
                    "client_keepalive_expiry_s": 5.0},
           "server": {"process": "fvaudit serve (1 uvicorn process, h11), Postgres on 127.0.0.1",
                      "keep_alive_seconds": keep_alive},
           "baseline": "GET /api/v1/health, same clients and server, measured first", "baseline_health": baseline,
           "totals": totals, "soak_vs_baseline": ratio, "minutes": per_minute,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                       "load1_start": round(samples[-1][1], 2), "load1_end": round(end[1], 2)}}
    print(f"soak: {args.clients} keep-alive clients, {args.duration:.0f} s, server keep-alive {keep_alive:g} s, "
          f"idle pauses p={args.idle_prob}")
    print(f"{'min':>3} {'requests':>8} {'errors':>24} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>7} {'load':>5}")
    for p in per_minute:
        errs = ",".join(f"{k}:{v}" for k, v in p["errors"].items()) or "0"
        print(f"{p['minute']:3d} {p['requests']:8d} {errs:>24} {p['p50_ms']:8.1f} {p['p95_ms']:8.1f} "
              f"{p['server_rss_mb'] or float('nan'):7.1f} {p['load1']:5.2f}")
    print(f"total {total} requests, {totals['errors']} errors {dict(errors)}, p50 {totals['p50_ms']} ms, "
          f"p95 {totals['p95_ms']} ms; vs GET /health (p50 {baseline['p50_ms']} ms, p95 {baseline['p95_ms']} ms): "
          f"p50 ×{ratio['p50']}, p95 ×{ratio['p95']}; server RSS {samples[-1][0]} → {end[0]} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0 if totals["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
