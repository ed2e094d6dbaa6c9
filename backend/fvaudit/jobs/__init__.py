"""Jobs: a registry of kinds (:mod:`fvaudit.jobs.registry`), one module per kind under
:mod:`fvaudit.jobs.kinds` (a pydantic spec, its checks against the DB, ``run(spec, ctx)``
or, for a chain such as ``audit``, ``expand(spec)`` into steps).

The database row is the truth: :mod:`fvaudit.jobs.create` writes it (and a chain's
children), :mod:`fvaudit.jobs.dispatch` sends only its id to the broker,
:mod:`fvaudit.jobs.runner` claims and runs it (idempotently, keyed by the id),
:mod:`fvaudit.jobs.reaper` resolves the jobs of dead workers and re-sends lost wake-ups.
"""
