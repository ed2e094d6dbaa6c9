import numpy as np
import pytest
import torch

from fvaudit.engine.models import ModelError, load_model
from fvaudit.engine.synthesis import FourierImage, SynthesisConfig, save_grid, synthesize


def test_normalize_matches_preprocess_on_native_pixels():
    m = load_model("fmnist-cnn")
    a = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    x = torch.from_numpy(a).float()[None, None] / 255
    torch.testing.assert_close(m.normalize(x)[0], m.preprocess(a), rtol=0, atol=1e-5)
    lite = load_model("efficientnet-lite0")
    rgb = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # 256 px: crop only
    xr = torch.from_numpy(rgb[16:240, 16:240]).float().permute(2, 0, 1)[None] / 255
    torch.testing.assert_close(lite.normalize(xr)[0], lite.preprocess(rgb), rtol=0, atol=1e-4)


def test_fourier_image_is_valid_pixels_and_seeded():
    a = FourierImage(2, 3, 16, 16, 1.0, torch.Generator().manual_seed(0))()
    b = FourierImage(2, 3, 16, 16, 1.0, torch.Generator().manual_seed(0))()
    assert a.shape == (2, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)


def test_synthesis_raises_each_units_activation_and_is_deterministic(tmp_path):
    m = load_model("fmnist-cnn")
    cfg = SynthesisConfig(steps=200, lr=0.08, batch_units=3, seed=1)
    res = synthesize(m, "relu3", [0, 5, 7, 9], cfg)
    assert res.images.shape == (4, 28, 28, 1) and res.images.dtype == np.uint8
    assert (res.activation > 3 * res.activation_start).all()
    again = synthesize(m, "relu3", [0, 5, 7, 9], cfg)
    np.testing.assert_array_equal(res.images, again.images)
    # each image is specific to its unit: unit 0's image drives unit 0 harder than unit 5's image does
    from fvaudit.engine.activations import layer_scores

    x = torch.from_numpy(res.images).float().permute(0, 3, 1, 2) / 255
    s, _ = layer_scores(m.module, m.normalize(x), ["relu3"])
    assert s["relu3"][0, 0] > s["relu3"][1, 0]
    save_grid(res.images, tmp_path / "grid.png", labels=["0", "5", "7", "9"])
    assert (tmp_path / "grid.png").stat().st_size > 0
    # the model's own parameters are left trainable as they were
    assert all(p.requires_grad for p in m.module.parameters())


def test_synthesis_rgb_model_and_bad_inputs():
    m = load_model("alexnet", pretrained=False)
    res = synthesize(m, "features.11", [3], SynthesisConfig(steps=2, batch_units=1))
    assert res.images.shape == (1, 224, 224, 3)
    with pytest.raises(ModelError, match="unit index 999 out of range"):
        synthesize(m, "features.11", [999], SynthesisConfig(steps=1))
    with pytest.raises(ValueError, match="steps: must be a positive integer"):
        synthesize(m, "features.11", [0], SynthesisConfig(steps=0))
