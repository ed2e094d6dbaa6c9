"""Pruning defences (SPEC §5): exact norm-pruning counts, masks through fine-tuning and the
attack, vulnerability pruning of chosen channels, OTO on a small model, bad inputs."""
import numpy as np
import pytest
import torch
from torch import nn

from fvaudit.engine import pruning
from fvaudit.engine.attacks import AttackConfig, Target, run_attack
from fvaudit.engine.images import open_image_set
from fvaudit.engine.models import clone_model, load_model
from fvaudit.engine.pruning import PruneError, norm_prune


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
    assert set(pruning.attached_masks(copy)) == {"conv.weight", "fc.weight"}


def test_masks_from_zeros_roundtrip():
    m = Tiny()
    rep = norm_prune(m, 0.5)
    back = pruning.masks_from_zeros(m)
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
    hist = pruning.finetune(m, train, [(3, 1e-3), (2, 1e-4)], batch_size=32)
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
