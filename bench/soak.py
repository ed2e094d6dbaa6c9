"""Soak: keep-alive clients on the unit page's endpoints for minutes.

    python bench/soak.py                          # 10 minutes, 50 clients, its own server (Postgres + Redis)
    python bench/soak.py --duration 60            # one minute
    python bench/soak.py --server-keep-alive 5    # the old uvicorn default: reproduces the resets
    python bench/soak.py --embedded               # its own server in the default embedded mode (SQLite)
    python bench/soak.py --embedded --tracemalloc /tmp/mem   # ... with tracemalloc snapshots a minute apart
    python bench/soak.py --url http://host:8000 --token $TOKEN [--run-id 3] [--pid 1234]
                                                  # a server that is already running (RSS only with --pid)

Against a running server (``--url``) the soak reads the newest succeeded run with unit
results (or ``--run-id``) and its first layer; the token must be able to read it (any
token of its owner, or an admin's). ``--pid`` names the server's process on this machine
for the memory column.

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
import contextlib
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import ROOT, bench_service, classify, percentile, rss_mb  # noqa: E402


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


@dataclass
class Remote:
    """A running server (``--url``): the paths the clients read, as :class:`_service.Service` gives them."""

    base: str
    headers: dict
    run_id: int
    pid: int | None
    layer: str
    units: int

    def unit_path(self, unit: int) -> str:
        return f"/api/v1/runs/{self.run_id}/layers/{self.layer}/units/{unit}"

    def table_path(self, page: int) -> str:
        return (f"/api/v1/runs/{self.run_id}/layers/{self.layer}/units?sort=clip_delta&order=desc&page={page}"
                "&page_size=50")


def remote_service(url: str, token: str, run_id: int | None, pid: int | None) -> Remote:
    """The run (given, or the newest succeeded one with unit results), its first layer and unit count."""
    import httpx

    base, headers = url.rstrip("/"), {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        c.get("/api/v1/me").raise_for_status()
        ids = [run_id] if run_id else [r["id"] for r in c.get("/api/v1/runs", params={"limit": 100}).json()
                                       if r["status"] == "succeeded"]
        for rid in ids:
            run = c.get(f"/api/v1/runs/{rid}")
            if run.status_code == 404:
                raise SystemExit(f"run {rid} not found at {url} (or not readable with this token)")
            run.raise_for_status()
            for layer in run.json().get("layers") or []:
                page = c.get(f"/api/v1/runs/{rid}/layers/{layer}/units", params={"page_size": 1})
                if page.status_code == 200 and page.json()["total"] > 0:
                    return Remote(base, headers, rid, pid, layer, page.json()["total"])
    raise SystemExit(f"no run with unit results at {url}" + (f" (run {run_id})" if run_id else "")
                     + ": give --run-id of a finished audit")


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
    ap.add_argument("--url", help="soak a server that is already running (its base URL) instead of starting one")
    ap.add_argument("--token", default=os.environ.get("FVAUDIT_TOKEN"),
                    help="API token for --url (default: $FVAUDIT_TOKEN)")
    ap.add_argument("--run-id", type=int, help="with --url: the run whose units to read (default: the newest "
                                               "succeeded run with unit results)")
    ap.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory (same machine)")
    ap.add_argument("--embedded", action="store_true",
                    help="start the server in embedded mode (SQLite, local workers) instead of service mode")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable of the started server (repeatable), e.g. "
                         "FVAUDIT_MALLOC_ARENA_MAX=0 FVAUDIT_MALLOC_TRIM_SECONDS=0 for glibc's defaults")
    ap.add_argument("--tracemalloc", type=Path, metavar="DIR",
                    help="run the started server under tracemalloc, a snapshot a minute into DIR; print what grew")
    args = ap.parse_args()
    extra = {} if args.server_keep_alive is None else {"FVAUDIT_KEEP_ALIVE_SECONDS": str(args.server_keep_alive)}
    for kv in args.server_env:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            ap.error(f"--server-env {kv!r}: expected KEY=VALUE")
        extra[key] = value
    if args.url and (args.embedded or args.tracemalloc or args.server_keep_alive is not None or args.server_env):
        ap.error("--url soaks a running server: --embedded, --tracemalloc, --server-env and --server-keep-alive "
                 "start one")
    if args.url and not args.token:
        ap.error("--url needs --token (or FVAUDIT_TOKEN)")

    def pick(rng: random.Random) -> str:
        return svc.unit_path(rng.randrange(svc.units)) if rng.random() < 0.7 else svc.table_path(rng.randrange(1, 4))

    if args.url:
        ctx = contextlib.nullcontext(remote_service(args.url, args.token, args.run_id, args.pid))
        mode = f"running server at {args.url}"
    else:
        command = None
        if args.tracemalloc:
            extra["FVAUDIT_MEMTRACE_EVERY"] = "60"
            # tracing starts once the server is up and the clients are past their first minute
            extra["FVAUDIT_MEMTRACE_START"] = str(int(args.baseline_seconds) + 90)
            command = [sys.executable, str(Path(__file__).with_name("_memtrace.py")), str(args.tracemalloc.resolve())]
        ctx = bench_service(args.broker, extra, embedded=args.embedded, command=command)
        mode = ("embedded (SQLite, local workers)" if args.embedded else "service (Postgres, Redis)") + \
            (", under tracemalloc" if args.tracemalloc else "")
    with ctx as svc:
        if args.url:
            keep_alive = None                                 # the running server's own setting, unknown here
        else:
            from fvaudit.config import Settings

            keep_alive = Settings().keep_alive_seconds       # the server's environment, set by bench_service
        base_min, base_s = asyncio.run(run_clients(svc, args.clients, args.baseline_seconds,
                                                   lambda rng: "/api/v1/health"))
        base_lat = [x for m in base_min for x in m.lat]
        baseline = {"requests": len(base_lat), "errors": dict(sum((m.errors for m in base_min), collections.Counter())),
                    "p50_ms": round(percentile(base_lat, 0.5), 1), "p95_ms": round(percentile(base_lat, 0.95), 1),
                    "throughput_rps": round(len(base_lat) / base_s, 1)}
        samples: dict[int, tuple[float | None, float]] = {}

        def rss() -> float | None:
            return rss_mb(svc.pid) if svc.pid else None

        samples[-1] = (rss(), os.getloadavg()[0])

        def on_sample(i: int) -> None:
            samples[i] = (rss(), os.getloadavg()[0])

        minutes, wall = asyncio.run(run_clients(svc, args.clients, args.duration, pick, args.idle_prob,
                                                on_sample=on_sample))
        end = (rss(), os.getloadavg()[0])
        if args.tracemalloc:
            time.sleep(5)                                     # let the last snapshot land
            from _memtrace import growth

            grew = growth(args.tracemalloc.resolve())
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
           "server": {"process": f"fvaudit serve (1 uvicorn process, h11), {mode}",
                      "keep_alive_seconds": keep_alive, "env": dict(kv.split("=", 1) for kv in args.server_env)},
           "baseline": "GET /api/v1/health, same clients and server, measured first", "baseline_health": baseline,
           "totals": totals, "soak_vs_baseline": ratio, "minutes": per_minute,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                       "load1_start": round(samples[-1][1], 2), "load1_end": round(end[1], 2)}}
    print(f"soak: {args.clients} keep-alive clients, {args.duration:.0f} s, {mode}, server keep-alive "
          f"{'?' if keep_alive is None else f'{keep_alive:g}'} s, idle pauses p={args.idle_prob}")
    print(f"{'min':>3} {'requests':>8} {'errors':>24} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>7} {'load':>5}")
    for p in per_minute:
        errs = ",".join(f"{k}:{v}" for k, v in p["errors"].items()) or "0"
        print(f"{p['minute']:3d} {p['requests']:8d} {errs:>24} {p['p50_ms']:8.1f} {p['p95_ms']:8.1f} "
              f"{p['server_rss_mb'] or float('nan'):7.1f} {p['load1']:5.2f}")
    print(f"total {total} requests, {totals['errors']} errors {dict(errors)}, p50 {totals['p50_ms']} ms, "
          f"p95 {totals['p95_ms']} ms; vs GET /health (p50 {baseline['p50_ms']} ms, p95 {baseline['p95_ms']} ms): "
          f"p50 ×{ratio['p50']}, p95 ×{ratio['p95']}; server RSS {samples[-1][0]} → {end[0]} MB")
    if args.tracemalloc:
        out["tracemalloc_growth"] = grew
        print("tracemalloc: allocation sites that grew most since tracing started (after the warm-up)")
        print("\n".join(grew) or "(fewer than 2 snapshots)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0 if totals["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
