import pickle

import numpy as np
import pytest
import torch

from fvaudit.engine.scans.activations import capture, run_captured
from fvaudit.engine.models.checkpoints import load_state_dict_file, save_checkpoint
from fvaudit.engine.models.loaded import ModelError
from fvaudit.engine.models.sources import load_model


def test_demo_model_layers_and_accuracy_metadata():
    m = load_model("fmnist-cnn")
    names = {l.name: l for l in m.layers}
    assert names["relu3"].units == 128 and names["relu3"].shape == (128, 7, 7)
    assert names["relu1"].kind == "conv" and names["fc2"].kind == "fc" and names["fc2"].units == 10
    assert m.layer("conv3 (post-ReLU)").name == "relu3"
    assert len(m.class_names) == 10
    from safetensors import safe_open
    from fvaudit.engine.models.sources import DEMO_WEIGHTS
    with safe_open(str(DEMO_WEIGHTS), "pt") as f:
        assert float(f.metadata()["test_accuracy"]) >= 90.0


def test_unknown_model_and_layer_and_units_name_the_problem():
    with pytest.raises(ModelError, match="unknown model 'nosuchnet'"):
        load_model("nosuchnet")
    m = load_model("fmnist-cnn")
    with pytest.raises(ModelError, match="unknown layer 'conv9'") as err:
        m.layer("conv9")
    # the names the CLI and the API accept, not the display labels (issue 13, item 17)
    assert str(err.value).endswith("conv layers: conv1, relu1, pool1, conv2, relu2, pool2, conv3, relu3, pool3"), \
        str(err.value)
    assert m.layer("relu3").name == "relu3"
    with pytest.raises(ModelError, match="unit index 128 out of range .* 128 units"):
        m.check_units("relu3", [0, 128])
    with pytest.raises(ModelError, match="unit index -1"):
        m.check_units("relu3", [-1])


def test_torchvision_offline_weights_error_names_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    import torchvision.models as tvm

    def no_net(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.AlexNet_Weights.IMAGENET1K_V1.__class__, "get_state_dict", no_net)
    with pytest.raises(ModelError, match=r"not cached at .*hub/checkpoints/alexnet-owt-7be5be79.pth"):
        load_model("alexnet")


def test_torchvision_models_random_init_layer_lists():
    for name, layer, units in [("alexnet", "features.11", 256), ("resnet50", "layer4.2.conv2", 512),
                               ("vit_b_32", "encoder.layers.encoder_layer_11", 768)]:
        m = load_model(name, pretrained=False)
        info = m.layer(layer)
        assert info.units == units, name
    assert load_model("alexnet", pretrained=False).layer("conv5").name == "features.11"
    with pytest.raises(ModelError, match=r"conv layers: .*features\.11 or conv5"):
        load_model("alexnet", pretrained=False).layer("conv6")
    assert load_model("vit_b_32", pretrained=False).layer("encoder.layers.encoder_layer_11").kind == "tokens"


def test_efficientnet_lite0_real_weights_offline():
    m = load_model("efficientnet-lite0")
    assert m.weights.startswith("efficientnet-lite0")
    assert len(m.class_names) == 1000
    assert any(l.kind == "conv" and l.units == 1280 for l in m.layers)
    x = m.preprocess(np.full((40, 60, 3), 128, dtype=np.uint8))
    assert x.shape == (3, 224, 224)


def test_inplace_relu_trap_conv_output_is_pre_relu():
    """SPEC §1: features.10 is pre-ReLU even though features.11 (ReLU, in place) follows."""
    from torchvision.models.feature_extraction import create_feature_extractor

    m = load_model("alexnet", pretrained=False)
    x = torch.randn(2, 3, 224, 224)
    outs, _ = run_captured(m.module, x, ["features.10", "features.11"])
    fx = create_feature_extractor(m.module, ["features.10"])
    ref_pre = fx(x)["features.10"]
    torch.testing.assert_close(outs["features.10"], ref_pre)
    assert (outs["features.10"] < 0).any()                 # really pre-ReLU
    torch.testing.assert_close(outs["features.11"], ref_pre.clamp_min(0))


def test_hooks_always_removed_even_on_error():
    m = load_model("fmnist-cnn")
    with pytest.raises(RuntimeError):
        with capture(m.module, ["relu3"]):
            m.module(torch.zeros(1, 3, 5, 5))  # wrong input shape
    assert all(len(mod._forward_hooks) == 0 for mod in m.module.modules())


def test_checkpoint_roundtrip_safetensors_and_weights_only_pt(tmp_path):
    m = load_model("fmnist-cnn")
    p = save_checkpoint(m.module, tmp_path / "w.safetensors")
    m2 = load_model("fmnist-cnn", checkpoint=p)
    for (k, a), (_, b) in zip(m.module.state_dict().items(), m2.module.state_dict().items()):
        assert torch.equal(a, b), k
    pt = tmp_path / "w.pt"
    torch.save({"state_dict": m.module.state_dict()}, pt)
    m3 = load_model("fmnist-cnn", checkpoint=pt)
    assert torch.equal(m3.module.conv1.weight, m.module.conv1.weight)
    assert m3.weights == "checkpoint:w.pt"


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/fvaudit-pwned-marker", "w"))


def test_pickled_object_in_pt_is_refused_and_executes_nothing(tmp_path):
    import os

    marker = "/tmp/fvaudit-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Exploit()}, evil)
    assert not os.path.exists(marker)
    with pytest.raises(ModelError, match="refused: it is not a weights-only"):
        load_state_dict_file(evil)
    assert not os.path.exists(marker)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ModelError, match="refused"):
        load_model("fmnist-cnn", checkpoint=raw)
    assert not os.path.exists(marker)


def test_checkpoint_that_does_not_fit(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "bad.safetensors"
    save_file({"nope": torch.zeros(2)}, str(p))
    with pytest.raises(ModelError, match="does not fit the architecture"):
        load_model("fmnist-cnn", checkpoint=p)
    with pytest.raises(ModelError, match="does not exist"):
        load_model("fmnist-cnn", checkpoint=tmp_path / "missing.safetensors")
