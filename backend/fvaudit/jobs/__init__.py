"""Jobs: one module per kind (a pydantic spec in ``specs`` + ``run(spec, ctx)``).

The database row is the truth: :mod:`fvaudit.jobs.create` writes it (and, for a chain
such as ``audit``, its children), :mod:`fvaudit.jobs.dispatch` sends only its id to the
broker, :mod:`fvaudit.jobs.runner` claims and runs it (idempotently, keyed by the id),
:mod:`fvaudit.jobs.reaper` resolves the jobs of dead workers and re-sends lost wake-ups.

Kinds that run on a worker: ``scan``, ``attack``, ``metrics``. ``audit`` is a chain
(scan θ_init → attack → scan θ_final → metrics) whose children are jobs of those kinds.
New kinds (synthetic visualization, pruning, ...) add a spec, a module with ``run`` and
an entry in :data:`RUNNABLE` / :data:`CHAINS`.
"""
from __future__ import annotations

#: kind -> module (under fvaudit.jobs) with ``run(spec, ctx) -> dict``
RUNNABLE = {"scan": "fvaudit.jobs.scan", "attack": "fvaudit.jobs.attack", "metrics": "fvaudit.jobs.metrics"}
#: kinds that expand into a chain of runnable children (see fvaudit.jobs.create)
CHAINS = {"audit"}
