"""The OTO shims (SPEC §5, ENVIRONMENT.md): only-train-once 3.0.1 imports with this torch and
HESSO builds its masks on the parameters' device instead of calling .cuda()."""
import importlib
import sys

import pytest
import torch

from fvaudit.engine.defence import oto_compat


def test_load_oto_imports_and_patches_hesso():
    oto = oto_compat.load_oto()
    assert hasattr(oto, "OTO")
    assert importlib.import_module("torch.onnx._globals").GLOBALS is not None
    assert callable(torch.onnx._optimize_graph)
    from only_train_once.optimizer.hesso import HESSO

    fn = HESSO.identify_redundant_groups
    assert fn._fvaudit_device_aware is True
    assert "cuda" not in fn.__code__.co_names            # the compiled method calls .to(device), not .cuda()
    assert oto_compat.load_oto() is oto and HESSO.identify_redundant_groups is fn   # idempotent


def test_hesso_prunes_on_cpu():
    """A HESSO pruning step (the one that called .cuda()) runs on CPU and zeroes groups."""
    oto_pkg = oto_compat.load_oto()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    o = oto_pkg.OTO(model=model, dummy_input=torch.zeros(1, 1, 8, 8))
    opt = o.hesso(variant="adam", lr=1e-3, target_group_sparsity=0.5, pruning_steps=2, pruning_periods=1)
    for _ in range(3):
        loss = model(torch.randn(4, 1, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert opt.curr_num_zero_groups == int(12 * 0.5)          # 8 + 4 conv filters; the linear is the output


def test_an_unexpected_hesso_source_fails_loudly(tmp_path, monkeypatch):
    src = ("import torch\nclass HESSO:\n    def identify_redundant_groups(self):\n"
           "        a = torch.zeros(group['num_groups'], dtype=torch.bool).cuda()\n"
           "        b = torch.zeros(group['num_groups'], dtype=torch.bool).cuda()\n")
    (tmp_path / "fake_hesso.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.import_module("fake_hesso")
    try:
        with pytest.raises(oto_compat.OTOUnavailable, match="2 occurrences"):
            oto_compat._device_aware_hesso(fake)
    finally:
        sys.modules.pop("fake_hesso", None)
