"""The engine: pure computation on torch and numpy, no web, database or job imports, so it
runs from a notebook or the CLI as well as inside a worker.

The notebook API, importable from here (each name loads its sub-package on first use)::

    from fvaudit import engine

    model = engine.load_model("fmnist-cnn")
    train = engine.open_image_set("fashion-mnist:train", limit=5000)
    val = engine.open_image_set("fashion-mnist:test", limit=2000)
    before = engine.scan(model, val, ["relu3"], k=10)                        # SPEC §1
    cfg = engine.AttackConfig(kind="push_down", targets=[engine.Target("relu3")], steps=200)
    attack = engine.run_attack(model, train, val, cfg)                       # SPEC §2
    after = engine.scan(attack.selected_model, val, ["relu3"], k=10)
    tau = engine.kendall_tau(before.layers["relu3"].scores, after.layers["relu3"].scores)   # §3
    images = engine.synthesize(model, "relu3", [0, 1])                       # §4
    sling = engine.AttackConfig(kind="slingshot", targets=[engine.Target("relu3", [0, 1])],
                                target_images=["boot.png"], steps=1500)        # §8.1
    pruned = engine.prune(model, "norm", 0.5, train, val)                    # §5

The sub-packages, by idea: ``data`` (image sets, decode, the input pipeline), ``models``
(registry and sources, the loaded-model type, checkpoints, surgery), ``scan``, ``attack``,
``measure`` (Kendall, CLIP, top-k, embedders, report, synthetic measures), ``synthesis``,
``defence`` (masks, methods, fine-tune, the one ``prune()``, sweep), ``detection``, and
``audit`` (scan → attack → scan → measure in one process).
"""
from __future__ import annotations

import importlib
from typing import Any

#: name → the module that defines it
_EXPORTS = {
    # models
    "load_model": "fvaudit.engine.models.sources",
    "clone_model": "fvaudit.engine.models.sources",
    "list_models": "fvaudit.engine.models.sources",
    "LoadedModel": "fvaudit.engine.models.loaded",
    "ModelError": "fvaudit.engine.models.loaded",
    "save_checkpoint": "fvaudit.engine.models.checkpoints",
    # data
    "open_image_set": "fvaudit.engine.data.images",
    "subset": "fvaudit.engine.data.images",
    "ImageSetError": "fvaudit.engine.data.images",
    # scan
    "scan": "fvaudit.engine.scans.activations",
    # attack
    "AttackConfig": "fvaudit.engine.attack.config",
    "Target": "fvaudit.engine.attack.config",
    "run_attack": "fvaudit.engine.attack.run",
    "evaluate_accuracy": "fvaudit.engine.attack.run",
    "ATTACK_KINDS": "fvaudit.engine.attack.kinds",
    # measure
    "kendall_tau": "fvaudit.engine.measure.kendall",
    "kendall_tau_w": "fvaudit.engine.measure.kendall",
    "clip_delta": "fvaudit.engine.measure.clip",
    "clip_w": "fvaudit.engine.measure.clip",
    "topk_overlap": "fvaudit.engine.measure.topk",
    "measure_layer": "fvaudit.engine.measure.report",
    "make_topk_embedder": "fvaudit.engine.measure.embedders",
    "measure_fv_manipulation": "fvaudit.engine.measure.fv_manipulation",
    # synthesis
    "synthesize": "fvaudit.engine.synthesis.render",
    "synthesize_many": "fvaudit.engine.synthesis.render",
    # defence
    "prune": "fvaudit.engine.defence.prune",
    "FinetuneSettings": "fvaudit.engine.defence.prune",
    # detection
    "detect": "fvaudit.engine.detection.run",
    # the whole audit
    "run_audit": "fvaudit.engine.audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load a notebook-API name on first use (importing the engine package stays cheap: the
    API process imports torch-free pieces such as the attack defaults)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fvaudit.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
