"""The model registry (timm's shape) and timm models through it (issue 13, item 19).

The timm models are random-init (no download); their layer scans are checked against
SPEC §1 computed here by hand from a forward hook: token layers (ViT blocks, [T, D])
score Σ_t A[t, j]², conv layers (ConvNeXt stages, [C, H, W]) score Σ_{h,w} A[j, h, w]².
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fvaudit.engine.models import registry
from fvaudit.engine.scans.activations import scan
from fvaudit.engine.data.images import ArrayImageSet
from fvaudit.engine.models.registry import ModelFamily, ModelRegistry, UnknownModel
from fvaudit.engine.models.checkpoints import save_checkpoint
from fvaudit.engine.models.loaded import ModelError
from fvaudit.engine.models.sources import list_models, load_model

timm = pytest.importorskip("timm")


# ---------------------------------------------------------------- the registry itself

def test_register_create_list_is_model_read_one_dict():
    reg = ModelRegistry()
    built = []

    @reg.register_model(source="test", description="a tiny one", offline=True)
    def tiny(pretrained: bool):
        built.append(pretrained)
        return ("tiny", pretrained)

    @reg.register_model("hidden-one", source="test", description="not in the picker", listed=False)
    def _hidden(pretrained: bool):
        return ("hidden", pretrained)

    reg.register_family(ModelFamily("num", knows=lambda n: n.startswith("num:") and n[4:].isdigit(),
                                    factory=lambda n, p: ("num", int(n[4:]), p), names=lambda: ["num:1", "num:2"],
                                    hint="num:<digits>"))
    assert reg.create("tiny") == ("tiny", True) and reg.create("tiny", pretrained=False) == ("tiny", False)
    assert built == [True, False]
    assert reg.create("num:42", pretrained=False) == ("num", 42, False)
    assert reg.create("hidden-one") == ("hidden", True)
    assert reg.list_models() == ["tiny"]
    assert reg.list_models(families=True) == ["tiny", "hidden-one", "num:1", "num:2"]
    assert reg.list_models("num:*", families=True) == ["num:1", "num:2"]
    assert [e.as_dict() for e in reg.entries()] == [
        {"name": "tiny", "source": "test", "offline": True, "description": "a tiny one"}]
    assert reg.is_model("tiny") and reg.is_model("num:7") and not reg.is_model("num:x") and not reg.is_model("")
    with pytest.raises(UnknownModel, match=r"unknown model 'nope'; known models: tiny \(num:<digits>\)"):
        reg.create("nope")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register_model("tiny", source="x", description="y")(lambda p: None)


def test_exact_entries_win_over_families_and_families_resolve_in_order():
    reg = ModelRegistry()
    reg.register_model("alpha", source="s", description="d")(lambda p: "entry")
    reg.register_family(ModelFamily("first", knows=lambda n: n.startswith("a"), factory=lambda n, p: "first"))
    reg.register_family(ModelFamily("second", knows=lambda n: True, factory=lambda n, p: "second"))
    reg.register_family(ModelFamily("absent", knows=lambda n: True, factory=lambda n, p: "absent",
                                    available=lambda: False))
    assert [reg.create(n) for n in ("alpha", "apple", "banana")] == ["entry", "first", "second"]


def test_every_existing_name_is_still_registered_in_the_picker_order():
    names = [m["name"] for m in list_models()]
    assert names[:9] == ["fmnist-cnn", "efficientnet-lite0", "alexnet", "resnet18", "resnet50", "vgg16",
                         "efficientnet_b0", "vit_b_32", "vit_b_16"]
    assert "timm:vit_tiny_patch16_224" in names and "timm:convnext_atto" in names
    assert all(set(m) == {"name", "source", "offline", "description"} for m in list_models())
    for name in ("fmnist-cnn", "efficientnet-lite0", "alexnet", "resnet101", "timm:convnext_atto",
                 "timm:vit_tiny_patch16_224.augreg_in21k"):
        assert registry.is_model(name), name
    for name in ("timm:", "timm:no_such_arch", "no_such_net", "convnext_atto"):   # timm names need the prefix
        assert not registry.is_model(name), name
    with pytest.raises(ModelError, match="unknown model 'timm:no_such_arch'.*any timm architecture as timm:<name>"):
        load_model("timm:no_such_arch", pretrained=False)


# ---------------------------------------------------------------- timm models

def _images(n: int = 6, size: int = 40, seed: int = 0) -> ArrayImageSet:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ArrayImageSet(f"generated:{seed}", imgs, np.arange(n) % 2, ["even", "odd"])


def _hooked(module: torch.nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    out = {}
    h = dict(module.named_modules())[name].register_forward_hook(lambda m, i, o: out.__setitem__("a", o.detach()))
    try:
        with torch.no_grad():
            module(x)
    finally:
        h.remove()
    return out["a"]


def _check_topk(ls, ref: np.ndarray, k: int) -> None:
    for j in range(ref.shape[1]):
        want = sorted(range(ref.shape[0]), key=lambda i: (-ref[i, j], i))[:k]
        assert ls.topk_ids[j].tolist() == want, j


@pytest.fixture(scope="module")
def vit():
    return load_model("timm:vit_tiny_patch16_224", pretrained=False)


@pytest.fixture(scope="module")
def convnext():
    return load_model("timm:convnext_atto", pretrained=False)


def test_timm_vit_layers_preprocessing_and_classes(vit):
    assert vit.name == "timm:vit_tiny_patch16_224" and vit.source == "timm" and vit.weights == "random-init"
    assert vit.input_shape == (3, 224, 224)
    blocks = [vit.layer(f"blocks.{i}") for i in range(12)]
    assert all(b.kind == "tokens" and b.shape == (197, 192) and b.units == 192 for b in blocks)
    assert vit.layer("block 11 (stride 16)").name == "blocks.11"              # feature_info labels
    assert vit.layer("patch_embed.proj").kind == "conv" and vit.layer("patch_embed.proj").shape == (192, 14, 14)
    assert vit.layer("head").kind == "fc" and vit.layer("head").units == 1000
    assert len(vit.class_names) == 1000 and vit.class_names[0] == "tench"
    # timm's data config for this ViT: mean = std = 0.5, bicubic, crop 0.9: a flat 128 image
    # stays flat, (128/255 - 0.5) / 0.5 everywhere
    x = vit.preprocess(np.full((50, 70, 3), 128, dtype=np.uint8))
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x, torch.full((3, 224, 224), (128 / 255 - 0.5) / 0.5), atol=1e-6, rtol=0)
    torch.testing.assert_close(vit.normalize(torch.full((1, 3, 2, 2), 0.75)), torch.full((1, 3, 2, 2), 0.5))


def test_timm_vit_token_layer_scan_matches_spec(vit):
    ds = _images()
    res = scan(vit, ds, ["blocks.11", "blocks.3"], k=3, batch_size=4, workers=1)
    x = vit.preprocess_many([ds.load_array(i) for i in range(len(ds))])
    for name in ("blocks.11", "blocks.3"):
        a = _hooked(vit.module, name, x)                                 # [N, 197, 192]
        ref = a.pow(2).sum(dim=1).numpy()                                # Σ over tokens, per hidden unit
        np.testing.assert_allclose(res.layers[name].scores, ref, rtol=1e-4, atol=1e-4)
        _check_topk(res.layers[name], ref, 3)
        assert res.layers[name].units == 192


def test_timm_convnext_layers_preprocessing_and_conv_scan(convnext):
    assert [convnext.layer(f"stages.{i}").shape for i in range(4)] == [(40, 56, 56), (80, 28, 28),
                                                                      (160, 14, 14), (320, 7, 7)]
    assert convnext.layer("stage 2 (stride 16)").name == "stages.2"
    assert set(convnext.conv_layers()) >= {"stages.0", "stages.3", "stem.0"}
    x = convnext.preprocess(np.full((30, 30), 200, dtype=np.uint8))           # grayscale in: RGB out
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x, ((200 / 255 - mean) / std).view(3, 1, 1).expand(3, 224, 224), atol=1e-5, rtol=0)
    ds = _images(n=5, size=33, seed=1)
    res = scan(convnext, ds, ["stages.3", "stages.1"], k=2, batch_size=2, workers=1)
    xs = convnext.preprocess_many([ds.load_array(i) for i in range(len(ds))])
    for name in ("stages.3", "stages.1"):
        ref = _hooked(convnext.module, name, xs).pow(2).sum(dim=(2, 3)).numpy()   # Σ_{h,w} A²
        np.testing.assert_allclose(res.layers[name].scores, ref, rtol=1e-4, atol=1e-3)
        _check_topk(res.layers[name], ref, 2)


def test_timm_checkpoint_round_trip(convnext, tmp_path):
    p = save_checkpoint(convnext.module, tmp_path / "cn.safetensors")
    again = load_model("timm:convnext_atto", checkpoint=p)
    assert again.weights == "checkpoint:cn.safetensors" and again.source == "timm + local checkpoint"
    for (k, a), (_, b) in zip(convnext.module.state_dict().items(), again.module.state_dict().items()):
        assert torch.equal(a, b), k


def test_timm_pretrained_weights_missing_error_names_the_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match=r"pretrained weights for timm:convnext_atto are not cached at "
                                         + str(tmp_path / "hf") + r"/models--timm--convnext_atto\.d2_in1k "
                                         r"\(hub id timm/convnext_atto\.d2_in1k\).*pretrained=false"):
        load_model("timm:convnext_atto")
