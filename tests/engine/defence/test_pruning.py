"""Pruning defences (SPEC §5): exact norm-pruning counts, masks through fine-tuning and the
attack, vulnerability pruning of chosen channels, OTO on a small model, bad inputs."""
import numpy as np
import pytest
import torch
from torch import nn

from fvaudit.engine.defence.finetune import finetune
from fvaudit.engine.defence.masks import apply_masks, attached_masks, count_pruning, masks_from_zeros, prunable_shapes
from fvaudit.engine.defence.methods import construct_subnet, hesso_train, oto_prune, vulnerability_prune
from fvaudit.engine.models.surgery import prunable_layers, pruned_architecture, rebuild_pruned
from fvaudit.engine.attack.config import AttackConfig, Target
from fvaudit.engine.attack.run import run_attack
from fvaudit.engine.data.images import open_image_set
from fvaudit.engine.models.sources import clone_model, load_model
from fvaudit.engine.defence.methods import norm_prune
from fvaudit.engine.models.surgery import PruneError


class Tiny(nn.Module):
    """conv (2 filters of 1×2) → flatten → linear 2→2, with hand-picked weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, (1, 2))
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.5, -0.1, 0.2, -0.2]).reshape(2, 1, 1, 2))
            self.fc.weight.copy_(torch.tensor([[0.3, -0.05], [0.2, 1.0]]))
            self.conv.bias.copy_(torch.tensor([0.01, -0.01]))
            self.fc.bias.copy_(torch.tensor([0.001, 0.002]))

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def _flat(m):
    return torch.cat([m.conv.weight.reshape(-1), m.fc.weight.reshape(-1)]).tolist()


# |w| in flat order (conv then fc): 0.5 0.1 0.2 0.2 | 0.3 0.05 0.2 1.0
# ascending, ties by flat index: #5 (0.05), #1 (0.1), #2, #3, #6 (0.2), #4 (0.3), #0, #7
@pytest.mark.parametrize("rate,zeroed_idx", [
    (0.25, [5, 1]),            # 2 of 8
    (0.3, [5, 1]),             # 2.4 → 2
    (0.32, [5, 1, 2]),         # 2.56 → 3; of the three ties at 0.2 the first (flat #2) goes
    (0.5, [5, 1, 2, 3]),       # the second tie: conv filter 1 now entirely zero
    (0.625, [5, 1, 2, 3, 6]),
    (0.875, [5, 1, 2, 3, 6, 4, 0]),
])
def test_norm_prune_zeroes_exactly_the_smallest(rate, zeroed_idx):
    m = Tiny()
    before = _flat(m)
    rep = norm_prune(m, rate)
    after = _flat(m)
    expect = [0.0 if i in zeroed_idx else w for i, w in enumerate(before)]
    assert after == pytest.approx(expect, abs=0)
    assert rep.weight_rate == len(zeroed_idx) / 8
    assert rep.details["zeroed"] == len(zeroed_idx) and rep.details["prunable_weights"] == 8
    # biases are not prunable
    assert m.conv.bias.tolist() == pytest.approx([0.01, -0.01]) and m.fc.bias.tolist() == pytest.approx([0.001, 0.002])
    masks = torch.cat([rep.masks["conv.weight"].reshape(-1), rep.masks["fc.weight"].reshape(-1)])
    assert sorted(np.flatnonzero(~masks.numpy()).tolist()) == sorted(zeroed_idx)
    conv_zero = sum(1 for i in zeroed_idx if i < 4)
    assert rep.layers["conv"] == {"weights": 4, "zeroed": conv_zero, "filters": 2,
                                  "filters_removed": int({2, 3} <= set(zeroed_idx)) + int({0, 1} <= set(zeroed_idx))}
    assert rep.layers["fc"]["zeroed"] == len(zeroed_idx) - conv_zero
    assert rep.filter_rate == rep.layers["conv"]["filters_removed"] / 2
    js = rep.to_json()
    assert "masks" not in js and js["weights_zeroed"] == len(zeroed_idx) and js["target"] == {"rate": rate}


def test_norm_prune_threshold_and_report():
    m = Tiny()
    rep = norm_prune(m, 0.5)
    assert rep.details["threshold"] == pytest.approx(0.2)
    assert rep.filter_rate == 0.5 and rep.layers["conv"]["filters_removed"] == 1
    # a tie left standing: flat #6 has |w| = 0.2 = threshold and is kept
    assert m.fc.weight[1, 0].item() == pytest.approx(0.2)


@pytest.mark.parametrize("rate", [0, 1, 1.5, -0.1, float("nan"), "0.5", True])
def test_norm_prune_rejects_bad_rates(rate):
    with pytest.raises(PruneError, match="rate"):
        norm_prune(Tiny(), rate)


def test_masks_survive_every_optimizer_step():
    """The step post-hook re-zeroes right after opt.step(), before any forward reads it."""
    torch.manual_seed(0)
    m = Tiny()
    rep = norm_prune(m, 0.5)
    copy = __import__("copy").deepcopy(m)         # how run_attack builds its student
    for model in (m, copy):
        for opt in (torch.optim.Adam(model.parameters(), lr=0.1), torch.optim.SGD(model.parameters(), lr=0.5)):
            for _ in range(3):
                loss = model(torch.randn(4, 1, 1, 2)).square().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                for name, mask in rep.masks.items():
                    w = model.get_submodule(name.split(".")[0]).weight
                    assert (w[~mask] == 0).all()
        # the kept weights did train
        assert m.fc.weight[1, 1].item() != pytest.approx(1.0)
    assert "fvaudit_prune_mask" not in "".join(m.state_dict())   # checkpoints keep plain keys
    assert set(attached_masks(copy)) == {"conv.weight", "fc.weight"}


def test_masks_from_zeros_roundtrip():
    m = Tiny()
    rep = norm_prune(m, 0.5)
    back = masks_from_zeros(m)
    assert all(torch.equal(back[k], rep.masks[k]) for k in rep.masks)


@pytest.fixture(scope="module")
def fmnist():
    model = load_model("fmnist-cnn")
    train = open_image_set("fashion-mnist:train", limit=300)
    val = open_image_set("fashion-mnist:test", limit=100)
    return model, train, val


def _check_held(model, masks, reference):
    moved = 0.0
    for name, mask in masks.items():
        w = model.module.get_submodule(name.rsplit(".", 1)[0]).weight.detach()
        w_ref = reference.module.get_submodule(name.rsplit(".", 1)[0]).weight.detach()
        assert int((w[~mask] != 0).sum()) == 0, name
        moved = max(moved, float((w - w_ref)[mask].abs().max()))
    assert moved > 1e-5          # the kept weights were trained: the check is not vacuous


def test_masks_survive_finetune_and_push_down_attack(fmnist, tmp_path):
    base, train, val = fmnist
    m = clone_model(base)
    rep = norm_prune(m, 0.5)
    assert rep.weight_rate == 0.5
    pruned = clone_model(m)
    hist = finetune(m, train, [(3, 1e-3), (2, 1e-4)], batch_size=32)
    assert [h["lr"] for h in hist] == [1e-3] * 3 + [1e-4] * 2
    _check_held(m, rep.masks, pruned)
    tuned = clone_model(m)
    for kind in ("finetune", "push_down"):
        cfg = AttackConfig(kind=kind, targets=[Target("relu3", list(range(8)))], steps=3, lr=1e-3, batch_size=32,
                           attack_batch_size=32, eval_every=3, eval_size=0, k=5,
                           alpha=0.0 if kind == "finetune" else 1.0)
        res = run_attack(m, train, val, cfg, out_dir=tmp_path / kind)
        _check_held(res.final_model, rep.masks, tuned)
        saved = load_model("fmnist-cnn", checkpoint=res.final_path)
        for name, mask in rep.masks.items():
            assert int((saved.module.get_submodule(name.split(".")[0]).weight[~mask] != 0).sum()) == 0


# ---------------------------------------------------------------- vulnerability pruning

CHANS = [3, 17, 64, 127]


def _masked_reference(base, conv, chans):
    """The same model with the chosen filters (weights and bias) zeroed: what removal must equal."""
    ref = clone_model(base)
    with torch.no_grad():
        layer = ref.module.get_submodule(conv)
        layer.weight[chans] = 0
        layer.bias[chans] = 0
    return ref


@pytest.mark.parametrize("layer", ["relu3", "conv3", "conv3 (post-ReLU)"])
def test_vulnerability_prune_removes_exactly_the_chosen_channels(fmnist, layer):
    base, _, val = fmnist
    m = clone_model(base)
    rep = vulnerability_prune(m, layer, [127, 3, 64, 17])
    kept = [c for c in range(128) if c not in CHANS]
    conv, fc1 = m.module.conv3, m.module.fc1
    assert conv.weight.shape == (124, 64, 3, 3) and conv.out_channels == 124
    assert torch.equal(conv.weight, base.module.conv3.weight[kept])
    assert torch.equal(conv.bias, base.module.conv3.bias[kept])
    # fc1 reads the flattened [128, 3, 3] map: channel c feeds inputs 9c..9c+8
    assert fc1.weight.shape == (128, 124 * 9) and fc1.in_features == 1116
    assert torch.equal(fc1.weight, base.module.fc1.weight.reshape(128, 128, 9)[:, kept].reshape(128, -1))
    assert torch.equal(fc1.bias, base.module.fc1.bias)
    assert m.layer("relu3").units == 124                       # the LoadedModel's layer list follows
    assert torch.equal(m.module.conv2.weight, base.module.conv2.weight)
    x = m.preprocess_many(list(val.arrays(val.ids[:32])))
    ref = _masked_reference(base, "conv3", CHANS)
    with torch.no_grad():
        assert torch.allclose(m.module(x), ref.module(x), atol=1e-5)
        assert not torch.allclose(m.module(x), base.module(x), atol=1e-3)   # the removal did change the model
    assert rep.target == {"layer": layer, "channels": CHANS, "n": 4}
    assert rep.layers["conv3"] == {"weights": 73728, "zeroed": 4 * 64 * 9, "filters": 128, "filters_removed": 4}
    assert rep.layers["fc1"] == {"weights": 147456, "zeroed": 4 * 9 * 128, "filters": 128, "filters_removed": 0}
    assert rep.weight_rate == (4 * 64 * 9 + 4 * 9 * 128) / 241184
    assert rep.filter_rate == 4 / (32 + 64 + 128)
    assert rep.details["width_after"] == 124 and rep.masks == {}
    assert [d["module"] for d in rep.details["removed_from"]] == ["conv3", "fc1"]


def test_structural_pruning_of_a_norm_pruned_model_keeps_its_zeros_held(fmnist):
    base, train, _ = fmnist
    m = clone_model(base)
    norm = norm_prune(m, 0.5)
    vulnerability_prune(m, "relu3", CHANS)
    masks = attached_masks(m)
    kept = [c for c in range(128) if c not in CHANS]
    # the norm masks, sliced like the weights: the kept filters' zeros, fc1's kept input columns
    assert torch.equal(masks["conv3.weight"], norm.masks["conv3.weight"][kept])
    assert torch.equal(masks["fc1.weight"], norm.masks["fc1.weight"].reshape(128, 128, 9)[:, kept].reshape(128, -1))
    assert torch.equal(masks["conv1.weight"], norm.masks["conv1.weight"])
    finetune(m, train, [(2, 1e-3)], batch_size=16)
    _check_held(m, masks, _pruned_copy_of(base, norm))


def _pruned_copy_of(base, norm):
    ref = clone_model(base)
    apply_masks(ref, norm.masks)
    vulnerability_prune(ref, "relu3", CHANS)
    return ref


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.bn1.running_mean.copy_(torch.arange(6.0))
            self.bn1.running_var.copy_(torch.arange(1.0, 7.0))

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.relu1(self.bn1(self.conv1(x))))).flatten(1))


def test_vulnerability_prune_takes_the_batchnorm_along():
    m = ConvBN().eval()
    before = __import__("copy").deepcopy(m)
    vulnerability_prune(m, "relu1", [0, 4], input_shape=(3, 8, 8))
    kept = [1, 2, 3, 5]
    assert m.bn1.num_features == 4 and m.bn1.running_mean.tolist() == [1.0, 2.0, 3.0, 5.0]
    assert torch.equal(m.conv2.weight, before.conv2.weight[:, kept])
    with torch.no_grad():
        # reference: BN output of the removed channels forced to 0 (zero gamma and beta)
        before.bn1.weight[[0, 4]] = 0
        before.bn1.bias[[0, 4]] = 0
        x = torch.randn(5, 3, 8, 8)
        assert torch.allclose(m(x), before(x), atol=1e-5)


@pytest.mark.parametrize("layer,channels,match", [
    ("relu3", [0, 128], r"channels: \[128\] out of range for relu3 \(it has 128 channels"),
    ("relu3", [-1], r"channels: \[-1\] out of range"),
    ("relu3", [5, 7, 5], r"channels: duplicate indices \[5\]"),
    ("relu3", [], "channels: at least one"),
    ("relu3", list(range(128)), "channels: removing all 128"),
    ("relu3", [1.5], "channels: not integers"),
    ("relu3", "0,1", "channels: must be a list"),
    ("nope", [0], "layer: .*unknown layer 'nope'"),
    ("fc2", [0], "layer: fc2 is the model's output layer"),
])
def test_vulnerability_prune_rejects_bad_input(fmnist, layer, channels, match):
    m = clone_model(fmnist[0])
    with pytest.raises(PruneError, match=match):
        vulnerability_prune(m, layer, channels)
    assert m.module.conv3.weight.shape[0] == 128            # nothing was changed


class Residual(nn.Module):
    """conv0 → x + conv2(relu(conv1(x))) → fc; ``stem=False``: the block adds the network input."""

    def __init__(self, stem=True):
        super().__init__()
        self.conv0 = nn.Conv2d(4, 4, 3, padding=1) if stem else nn.Identity()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv0(x)
        x = x + self.conv2(torch.relu(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("stem,match", [(True, "would also remove output channels of conv0"),
                                        (False, "does not run after removing channels of conv2")])
def test_vulnerability_prune_refuses_coupled_channels(stem, match):
    m = Residual(stem)
    w = m.conv2.weight.clone()
    with pytest.raises(PruneError, match=match):
        vulnerability_prune(m, "conv2", [1], input_shape=(4, 6, 6))
    assert torch.equal(m.conv2.weight, w) and m(torch.zeros(1, 4, 6, 6)).shape == (1, 2)   # left intact


def test_pruned_checkpoint_loads_through_load_model(fmnist, tmp_path):
    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.engine.models.loaded import ModelError

    base, _, val = fmnist
    m = clone_model(base)
    vulnerability_prune(m, "relu3", CHANS)
    rec = pruned_architecture(m)
    assert rec["shapes"]["conv3.weight"] == [124, 64, 3, 3] and rec["shapes"]["fc1.weight"] == [128, 1116]
    path = save_checkpoint(m.module, tmp_path / "pruned.safetensors")
    loaded = load_model("fmnist-cnn", checkpoint=path)
    assert loaded.layer("relu3").units == 124 and loaded.module.conv3.out_channels == 124
    x = m.preprocess_many(list(val.arrays(val.ids[:16])))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), m.module(x))
    fresh = load_model("fmnist-cnn", pretrained=False)
    assert rebuild_pruned(fresh, rec) == ["conv3", "fc1"]
    fresh.module.load_state_dict(m.module.state_dict())
    with pytest.raises(PruneError, match="not in the base architecture"):
        rebuild_pruned(load_model("fmnist-cnn", pretrained=False), {"conv9.weight": [1]})
    # a checkpoint with other class outputs is no pruned version of the architecture
    bad = clone_model(base)
    with torch.no_grad():
        bad.module.fc2 = nn.Linear(128, 7)
    path = save_checkpoint(bad.module, tmp_path / "other.safetensors")
    with pytest.raises(ModelError, match="output layer fc2 would change from 10 to 7"):
        load_model("fmnist-cnn", checkpoint=path)


# ---------------------------------------------------------------- OTO

@pytest.mark.parametrize("mode", ["filter", "weight"])
def test_oto_subnet_equals_the_group_sparse_model(fmnist, mode):
    import copy

    base, train, val = fmnist
    m = clone_model(base)
    run = hesso_train(m, train, 0.25, mode=mode, steps=12, batch_size=32, pruning_periods=2, lr=1e-4)
    assert run.total_groups == 32 + 64 + 128 + 128          # conv1..3 filters, fc1 neurons; fc2 is the output
    assert run.zero_groups == int(352 * 0.25) and run.group_sparsity == pytest.approx(0.25, abs=1e-6)
    full = copy.deepcopy(m.module)
    before = prunable_shapes(base.module)
    construct_subnet(run)
    weight_rate, filter_rate, layers = count_pruning(m.module, before)
    removed = sum(v["filters_removed"] for v in layers.values())   # conv filters and fc1 neurons
    assert removed == run.zero_groups                       # every zero group was removed, and nothing else
    assert weight_rate > 0
    x = m.preprocess_many(list(val.arrays(val.ids[:64])))
    with torch.no_grad():
        assert torch.allclose(m.module(x), full(x), atol=1e-5)


def test_oto_prune_report(fmnist):
    base, train, _ = fmnist
    m = clone_model(base)
    rep = oto_prune(m, train, 0.5, mode="filter", steps=8, batch_size=32, pruning_periods=1)
    assert rep.method == "oto-filter" and rep.target == {"group_sparsity": 0.5, "mode": "filter"}
    assert rep.details["zero_groups"] == 176 and rep.details["group_sparsity_reached"] == pytest.approx(0.5, abs=1e-6)
    widths = {n: mod.weight.shape[0] for n, mod in prunable_layers(m.module)}
    assert rep.filter_rate == (224 - widths["conv1"] - widths["conv2"] - widths["conv3"]) / 224
    assert 0 < rep.weight_rate < 1 and m.layer("relu3").units == widths["conv3"]
    assert rep.to_json()["details"]["optimizer"] == "HESSO (only-train-once 3.0.1)"


@pytest.mark.parametrize("kw,match", [
    ({"group_sparsity": 0.0}, "group_sparsity: must be a number strictly between 0 and 1"),
    ({"group_sparsity": 1.0}, "group_sparsity"),
    ({"mode": "channel"}, r"mode: must be one of \['filter', 'weight'\]"),
    ({"steps": 1}, "steps"),
])
def test_oto_rejects_bad_input(fmnist, kw, match):
    base, train, _ = fmnist
    args = {"group_sparsity": 0.5, **kw}
    with pytest.raises(PruneError, match=match):
        oto_prune(clone_model(base), train, **args)


@pytest.mark.parametrize("phases,match", [([], "at least one"), ([(0, 1e-3)], r"phases\[0\]"),
                                          ([(5, 1e-3), (5, -1.0)], r"phases\[1\]")])
def test_finetune_rejects_bad_phases(fmnist, phases, match):
    base, train, _ = fmnist
    with pytest.raises(PruneError, match=match):
        finetune(clone_model(base), train, phases)
