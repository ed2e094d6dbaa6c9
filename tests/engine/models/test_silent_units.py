"""Silent units (SPEC §8.3, Geirhos et al. 2024's orthogonal filters): the construction on a
tiny conv model whose numbers can be checked by hand, the exact zero on the natural images
it was calibrated on, and the demo CNN end to end: logits bit-identical, the render of a
manipulated unit pulled toward its target, a checkpoint that reloads without pickles."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.models.silent import (SilentConv, SilentError, orthogonal_direction, silent_filter,
                                          silent_units)


class Tiny(nn.Module):
    """conv 1×1 (2 → 2 channels) - relu - linear: each unit's filter is a 2-vector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * 2 * 2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.5, -0.25]))
            self.fc.weight.copy_(torch.arange(16, dtype=torch.float32).view(2, 8) / 10)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(self.relu(self.conv(x))))


def tiny_model() -> LoadedModel:
    return LoadedModel("tiny", Tiny().eval(), lambda a: torch.from_numpy(a), ["a", "b"], (2, 2, 2), "test", "hand",
                       normalize=lambda x: x)


def test_orthogonalisation_and_rescaling_by_hand():
    w = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    dw = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    # Δw_orth = (0, 0.8); rescaled by ‖w‖²/‖Δw_orth‖² = 4/0.64 → (0, 5)
    assert torch.allclose(orthogonal_direction(w, dw), torch.tensor([[0.0, 5.0]], dtype=torch.float64),
                          rtol=0, atol=1e-12)
    # w + 3·Δw⊥ = (2, 15), ‖·‖² = 229; w' = 100·(2, 15)·4/229
    expect = torch.tensor([[800 / 229, 6000 / 229]], dtype=torch.float64)
    assert torch.allclose(silent_filter(w, dw, lam=3.0, s=100.0), expect, rtol=0, atol=1e-12)
    with pytest.raises(SilentError, match="parallel"):
        orthogonal_direction(w, torch.tensor([[1.0, 0.0]], dtype=torch.float64))


def test_tiny_model_silent_path_exact_zero_on_its_natural_images():
    lm = tiny_model()
    # the conv is the first layer: its input is the target itself; the mean patch (0.6, 0.8) has unit norm
    target = torch.stack([torch.full((2, 2), 0.6), torch.full((2, 2), 0.8)])
    g = torch.Generator().manual_seed(0)
    natural = torch.rand((300, 2, 2, 2), generator=g)
    man, rec = silent_units(lm, "relu", [0], target, natural, batch_size=64)
    sc = man.module.conv
    assert isinstance(sc, SilentConv) and sc.units() == [0]
    assert torch.allclose(sc.silent_weight.detach().double().view(1, 2),
                          torch.tensor([[800 / 229, 6000 / 229]], dtype=torch.float64), atol=1e-5)
    # b' = −max over natural images and positions of (w'∗x), less the recorded margin
    z = torch.einsum("c,bchw->bhw", sc.silent_weight.detach().view(2), natural)
    m = float(z.max())
    assert rec["natural_max"][0] == pytest.approx(m, rel=1e-6) and rec["natural_images"] == 300
    assert rec["silent_bias"][0] == pytest.approx(-(m + 1e-4 * abs(m)), rel=1e-6)
    assert rec["original_bias"] == [0.5] and rec["lam"] == 3.0 and rec["s"] == 100.0
    json.dumps(rec)
    with torch.no_grad():
        assert bool((torch.relu(sc.silent_pre(natural)) == 0).all())
        assert torch.equal(man.module(natural), lm.module(natural))      # bit for bit
        assert torch.equal(man.module.conv(natural), lm.module.conv(natural))
        # the target pattern scaled up (off the natural range) does fire it
        strong = (target * 3)[None]
        assert float(man.module.conv(strong)[0, 0].max()) > float(lm.module.conv(strong)[0, 0].max()) + 1.0
        assert torch.equal(man.module.conv(strong)[0, 1], lm.module.conv(strong)[0, 1])   # other units untouched
    # the original model is not modified; layer names and unit counts are kept
    assert isinstance(lm.module.conv, nn.Conv2d)
    assert [(i.name, i.units) for i in man.layers] == [(i.name, i.units) for i in lm.layers]
    assert set(man.module.state_dict()) - set(lm.module.state_dict()) == {
        "conv.silent_weight", "conv.silent_bias", "conv.silent_units"}


def test_tiny_model_bad_requests():
    lm = tiny_model()
    nat = torch.rand((8, 2, 2, 2))
    with pytest.raises(SilentError, match="units"):
        silent_units(lm, "relu", [2], torch.rand(2, 2, 2), nat)
    with pytest.raises(SilentError, match="targets"):
        silent_units(lm, "relu", [0, 1], torch.rand(3, 2, 2, 2), nat)
    with pytest.raises(SilentError, match="targets"):
        silent_units(lm, "relu", [0], torch.rand(2, 2, 2) + 1, nat)
    with pytest.raises(SilentError, match="not a conv layer"):
        silent_units(lm, "fc", [0], torch.rand(2, 2, 2), nat)


# ---------------------------------------------------------------- the demo CNN

N_NATURAL = 300
UNIT = 72          # a unit whose short render finds the silent path (measured; see the report)


@pytest.fixture(scope="module")
def demo():
    from fvaudit.engine.data.images import open_image_set, subset
    from fvaudit.engine.models.silent import target_pixels
    from fvaudit.engine.models.sources import load_model

    lm = load_model("fmnist-cnn")
    train = subset(open_image_set("fashion-mnist:train"), np.arange(N_NATURAL))
    test = open_image_set("fashion-mnist:test")
    bag = int(np.flatnonzero(test.labels == 8)[0])
    target = target_pixels(lm, test.load_array(bag))
    man, rec = silent_units(lm, "relu3", [UNIT, 5], target, (train, None))
    return lm, man, rec, train, target


def test_demo_logits_bit_identical_on_the_natural_images(demo):
    lm, man, rec, train, _ = demo
    assert rec["conv"] == "conv3" and rec["layer"] == "relu3" and rec["natural_images"] == N_NATURAL
    x = lm.preprocess_many(train.arrays(np.arange(N_NATURAL)))
    with torch.no_grad():
        assert torch.equal(man.module(x), lm.module(x))
        for bs in (1, 7, 64):       # another batching sums the conv in another order: still exactly 0
            assert torch.equal(man.module(x[:bs]), lm.module(x[:bs]))
    assert man.layer("relu3").module_type == "ReLU" and man.layer("conv3").module_type == "SilentConv"
    assert [(i.name, i.units) for i in man.layers] == [(i.name, i.units) for i in lm.layers]


def test_demo_render_follows_the_silent_path(demo):
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import synthesize_many

    lm, man, _, _, target = demo
    cfg = SynthesisConfig(steps=128)
    seeds = [101, 202]
    ro = synthesize_many(lm, "relu3", [UNIT], seeds, cfg)
    rm = synthesize_many(man, "relu3", [UNIT], seeds, cfg)
    t = target[0].numpy()
    mse = lambda r: float(np.mean([((x.images[0, ..., 0] / 255.0 - t) ** 2).mean() for x in r]))  # noqa: E731
    # under synthesis the unit's activation goes far past anything natural (the silent path fired)
    assert min(b.activation[0] / a.activation[0] for a, b in zip(ro, rm)) > 10
    assert mse(rm) < mse(ro)


def test_demo_checkpoint_round_trip(demo, tmp_path):
    from safetensors import safe_open

    from fvaudit.engine.models.checkpoints import ARCH_RECORD_KEY, save_checkpoint
    from fvaudit.engine.models.sources import load_model

    lm, man, rec, train, target = demo
    path = save_checkpoint(man.module, tmp_path / "silent.safetensors", {"registry_name": "fmnist-cnn"})
    with safe_open(str(path), "pt") as f:
        arch = json.loads(f.metadata()[ARCH_RECORD_KEY])
    assert arch["kinds"]["silent_units"]["conv3"]["units"] == [UNIT, 5]
    back = load_model("fmnist-cnn", checkpoint=path)
    assert isinstance(back.module.conv3, SilentConv) and back.module.conv3.units() == [UNIT, 5]
    assert back.layer("conv3").module_type == "SilentConv"
    x = torch.cat([lm.preprocess_many(train.arrays(np.arange(32))), lm.normalize(target[None] * 4)])
    with torch.no_grad():
        assert torch.equal(back.module(x), man.module(x))
        assert not torch.equal(man.module(x[-1:]), lm.module(x[-1:]))    # the silent input does reach the logits
    # the plain architecture refuses the extra parameters instead of silently dropping them
    from fvaudit.engine.models.checkpoints import apply_checkpoint
    from fvaudit.engine.models.loaded import ModelError
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(tmp_path / "stripped.safetensors"))     # no metadata
    with pytest.raises(ModelError, match="unexpected"):
        apply_checkpoint(load_model("fmnist-cnn", pretrained=False).module, tmp_path / "stripped.safetensors")
