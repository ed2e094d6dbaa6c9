"""The notebook API (``from fvaudit import engine``): every exported name is the engine's own
object, and the docstring's path runs end to end at a tiny size."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from fvaudit import engine


def test_every_exported_name_is_the_defining_modules_object():
    for name, module in engine._EXPORTS.items():
        assert getattr(engine, name) is getattr(importlib.import_module(module), name), name
    assert set(engine.__all__) <= set(dir(engine))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        engine.nope  # noqa: B018


def test_the_docstring_path_at_a_tiny_size():
    model = engine.load_model("fmnist-cnn")
    train = engine.open_image_set("fashion-mnist:train", limit=300)
    val = engine.open_image_set("fashion-mnist:test", limit=200)
    before = engine.scan(model, val, ["relu3"], k=5, workers=0)
    cfg = engine.AttackConfig(kind="push_down", targets=[engine.Target("relu3", [0, 1, 2, 3])], steps=4,
                              eval_every=2, eval_size=0, batch_size=16, attack_batch_size=8, workers=0)
    attack = engine.run_attack(model, train, val, cfg)
    after = engine.scan(attack.final_model, val, ["relu3"], k=5, workers=0)
    a, b = before.layers["relu3"].scores, after.layers["relu3"].scores
    tau = engine.kendall_tau(a, b)
    assert tau.shape == (a.shape[1],) and np.nanmax(tau) <= 1.0
    assert not np.array_equal(a, b)                                          # the attack moved the weights
    np.testing.assert_allclose(engine.kendall_tau(a, a)[~np.isnan(tau)], 1.0, rtol=1e-12)   # τ(x, x) = 1 (in doubles)
    pruned = engine.prune(model, "norm", 0.5, train, val, settings=engine.FinetuneSettings(steps=2, batch_size=16))
    assert abs(pruned.record["weight_rate"] - 0.5) < 1e-3 and pruned.record["acc_n_images"] == 200
    assert pruned.model is not model
