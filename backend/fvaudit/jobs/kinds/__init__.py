"""The job kinds: one module per kind, each registering itself with
:func:`fvaudit.jobs.registry.register_kind` when imported (the registry imports every
module of this package). Torch-free at import: ``run`` loads the engine inside the worker."""
