"""Run ``fvaudit`` with tracemalloc on, writing a snapshot every ``FVAUDIT_MEMTRACE_EVERY`` seconds.

    python bench/_memtrace.py DIR serve --port 8000      # what bench/soak.py --tracemalloc DIR runs

Tracing starts ``FVAUDIT_MEMTRACE_START`` seconds after the process (after start-up and
warm-up), so a snapshot holds only what was allocated since and is still alive: the
candidates for growth, without the hundreds of thousands of start-up blocks (torch) whose
tracing made each snapshot take minutes under load. Snapshots go to
``DIR/snap-<n>.pickle`` (n = 0, 1, ... from the start of tracing). ``growth(DIR)``
compares two of them: the allocation sites that grew most, by source line (12 frames deep by default,
FVAUDIT_MEMTRACE_FRAMES; grouped by the frame nearest the allocation that lies in fvaudit, else the first).
This is how issue 19's creeping RSS under the soak was traced to its source.
"""
from __future__ import annotations

import os
import pickle
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def _dump(out: Path, every: float, start_after: float, frames: int) -> None:
    time.sleep(start_after)
    tracemalloc.start(frames)       # from here on: only what is allocated after the warm-up is traced
    n = 0
    while True:
        snap = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")])
        tmp = out / f".snap-{n}.tmp"
        with tmp.open("wb") as f:
            pickle.dump(snap, f, pickle.HIGHEST_PROTOCOL)
        tmp.rename(out / f"snap-{n}.pickle")
        n += 1
        time.sleep(every)


def growth(d: Path, first: int = 0, last: int | None = None, top: int = 15) -> list[str]:
    """The ``top`` allocation sites by growth between snapshots ``first`` and ``last`` (default: the newest)."""
    snaps = sorted(d.glob("snap-*.pickle"), key=lambda p: int(p.stem.split("-")[1]))
    if len(snaps) < 2:
        return []
    a = pickle.loads(snaps[min(first, len(snaps) - 2)].read_bytes())
    b = pickle.loads(snaps[-1 if last is None else last].read_bytes())
    stats = b.compare_to(a, "traceback")
    out = []
    for st in stats[:top]:
        frames = list(st.traceback)
        ours = [f for f in frames if "/fvaudit/" in f.filename] or frames
        where = " ← ".join(f"{Path(f.filename).name}:{f.lineno}" for f in ours[-3:][::-1])
        out.append(f"{st.size_diff / 2**20:+8.2f} MiB {st.count_diff:+8d} blocks  {where}")
    return out


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ.get
    threading.Thread(target=_dump, args=(out, float(env("FVAUDIT_MEMTRACE_EVERY", "60")),
                                         float(env("FVAUDIT_MEMTRACE_START", "0")),
                                         int(env("FVAUDIT_MEMTRACE_FRAMES", "12"))), daemon=True).start()
    sys.argv = ["fvaudit"] + sys.argv[2:]
    from fvaudit.cli import main as cli

    sys.exit(cli())


if __name__ == "__main__":
    main()
