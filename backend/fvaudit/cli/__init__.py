"""`fvaudit` command line.

Every module of this package that defines ``register(subparsers) -> {command: handler}``
adds its commands (the way job kinds register themselves): :mod:`.experiments` runs the
engine in this process (scan, attack, metrics, report, visualize, models,
train-demo-model, demo-experiment), :mod:`.prune` the pruning defences (prune, sweep),
:mod:`.service` the service (serve, worker, db, token, reaper, demo, setup-demo). A new
command group is one new module here.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser with every command module's commands, and {command: handler}."""
    p = argparse.ArgumentParser(prog="fvaudit", description=(
        "Audit the feature visualizations of image classifiers: run the engine in this process "
        "(scan, attack, metrics, report, visualize), the pruning defences (prune, sweep), or the "
        "service (serve, worker, demo). `fvaudit demo` starts the dashboard on a real demo audit."))
    sub = p.add_subparsers(dest="command", required=True)
    commands: dict = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):          # __main__
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            commands.update(module.register(sub))
    return p, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    from fvaudit.cli.common import fail
    from fvaudit.engine.attack.config import AttackConfigError
    from fvaudit.engine.data.images import ImageSetError
    from fvaudit.engine.models.loaded import ModelError

    try:
        return commands[args.command](args)
    except (ModelError, ImageSetError, AttackConfigError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
