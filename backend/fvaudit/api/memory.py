"""Keep the API process's memory flat under load (issue 19, item 12).

What grew: not Python objects. Under ``bench/soak.py`` (50 clients, embedded mode) the
server's resident memory rose about 1.6 MB a minute without end, while tracemalloc,
started after the warm-up, saw about 2 MB of live Python allocations after minutes, all of
them requests in flight (``bench/results/soak_memory.md``). The growth was in glibc's
malloc arenas: FastAPI runs the (sync) routes on a pool of up to 40 threads; glibc gives
threads their own arenas, up to 8 per core (16 on the soak's 2 cores), and each arena
keeps the high-water mark of what its threads freed, fragmented, instead of returning it
to the system. ``/proc/<pid>/smaps`` showed 14 such arenas of 1.4-5 MB each, the one in
use growing by about 300 KB a minute.

Two standard glibc knobs, set in the API process only (the workers' torch allocations are
another matter and keep glibc's defaults):

* ``mallopt(M_ARENA_MAX, n)``: at most ``n`` arenas (``FVAUDIT_MALLOC_ARENA_MAX``, 2):
  the threads share a few arenas, so freed memory is reused by the next request instead of
  sitting in another thread's arena;
* ``malloc_trim(0)`` every ``FVAUDIT_MALLOC_TRIM_SECONDS`` (60 s) in a daemon thread: the
  free pages of every arena go back to the system (it takes milliseconds).

Neither exists outside glibc (musl, macOS): there this module does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

from fvaudit.periodic import Periodic


M_ARENA_MAX = -8        # glibc's mallopt parameter number (malloc.h)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both exist: glibc)
        return libc
    except (OSError, AttributeError):
        return None


def limit_arenas(n: int) -> bool:
    """At most ``n`` malloc arenas from now on (0: leave glibc's default); True if applied."""
    libc = _libc()
    if n <= 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(n)))


def trim() -> bool:
    """Return free heap pages to the system; True if some were released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def trimmer(interval: float) -> Periodic:
    """Calls :func:`trim` every ``interval`` seconds (0: never) in a daemon thread until stopped."""
    return Periodic("malloc-trim", interval, trim, enabled=_libc() is not None)