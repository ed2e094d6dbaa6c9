import numpy as np
import pytest
import torch

from fvaudit.engine.models.loaded import ModelError
from fvaudit.engine.models.sources import load_model
from fvaudit.engine.synthesis.config import SynthesisConfig
from fvaudit.engine.synthesis.params import FourierImage
from fvaudit.engine.synthesis.render import save_grid, synthesize


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
    from fvaudit.engine.scans.activations import layer_scores

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


# ------------------------------------------------------------ batched seeds × units (SPEC §4)

def test_synthesize_many_records_and_pairs(tmp_path):
    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.engine.synthesis.render import synthesize_many

    m = load_model("fmnist-cnn")
    cfg = SynthesisConfig(steps=12, lr=0.08, batch_units=3)
    res = synthesize_many(m, "relu3", [2, 6], [5, 11], cfg)
    assert [r.seed for r in res] == [5, 11]
    for r in res:
        assert r.images.shape == (2, 28, 28, 1) and r.images.dtype == np.uint8 and r.activation.shape == (2,)
        assert (r.objective, r.steps, r.size) == ("score", 12, (28, 28))
        assert r.config["objective"] == "score" and r.config["seed"] == r.seed and r.config["steps"] == 12
        assert r.config["size"] == [28, 28]
    assert not np.array_equal(res[0].images, res[1].images)  # other seed, other noise
    # the same call under the same weights (a reloaded checkpoint) gives the same images:
    # a θ_init / θ_final pair differs only by the weights
    ck = save_checkpoint(m.module, tmp_path / "same.safetensors")
    again = synthesize_many(load_model("fmnist-cnn", checkpoint=ck), "relu3", [2, 6], [5, 11], cfg)
    for r, a in zip(res, again):
        np.testing.assert_array_equal(r.images, a.images)
    # an image depends on (seed, unit), not on its batch: unit 6 / seed 11 alone is the same image
    alone = synthesize(m, "relu3", [6], SynthesisConfig(steps=12, lr=0.08, seed=11))
    assert np.abs(alone.images[0].astype(int) - res[1].images[1].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="seeds: must be distinct"):
        synthesize_many(m, "relu3", [2], [1, 1], cfg)


def test_channel_mean_objective_on_a_layer_with_negative_outputs():
    from fvaudit.engine.scans.activations import run_captured
    from fvaudit.engine.synthesis.objectives import channel_mean, total_variation, unit_score

    # hand-checkable: a channel of −2s has a_j = Σ x² = 16 (rewards the negative output)
    # but channel mean −2 (SPEC §4's option for layers that can be negative)
    acts = {"l": torch.tensor([[[[-2.0, -2.0], [-2.0, -2.0]], [[1.0, 3.0], [0.0, 0.0]]]])}
    u0, u1 = torch.tensor([0]), torch.tensor([1])
    assert unit_score("l")(acts, None, u0).item() == 16.0 and channel_mean("l")(acts, None, u0).item() == -2.0
    assert unit_score("l")(acts, None, u1).item() == 10.0 and channel_mean("l")(acts, None, u1).item() == 1.0
    # objectives compose like lucent's: score − 0.5·TV; TV of [[0, 1], [0, 1]] = mean|Δy| + mean|Δx| = 0 + 1
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    combined = unit_score("l") + total_variation(0.5)
    assert combined(acts, x, u1).item() == 10.0 - 0.5 and combined.layers == ("l",)
    assert (2 * channel_mean("l"))(acts, x, u1).item() == 2.0

    # end to end on conv3 (before relu3): the channel-mean objective raises every unit's mean,
    # while Σ x² (the score objective) on the same pre-ReLU layer drives it negative
    from fvaudit.engine.measure.synthetic import unit_scores_of_images

    m = load_model("fmnist-cnn")
    units = [0, 8, 10, 20]
    res = synthesize(m, "conv3", units, SynthesisConfig(steps=60, lr=0.08, objective="channel_mean", seed=2))
    assert res.objective == "channel_mean" and res.config["objective"] == "channel_mean"
    assert (res.activation > res.activation_start).all()
    by_score = synthesize(m, "conv3", units, SynthesisConfig(steps=60, lr=0.08, objective="score", seed=2))
    mean_of_score_images = unit_scores_of_images(m, "conv3", units, by_score.images[:, None], "channel_mean")[:, 0]
    assert (mean_of_score_images < res.activation_start).all() and (mean_of_score_images < res.activation).all()
    # .activation is the channel mean of the untransformed final image (uint8 rounding aside)
    xq = torch.from_numpy(res.images).float().permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        o, _ = run_captured(m.module, m.normalize(xq), ["conv3"])
    means = o["conv3"].mean(dim=(2, 3))[torch.arange(4), torch.tensor(units)].numpy()
    np.testing.assert_allclose(means, res.activation, rtol=0.05, atol=0.02)
    with pytest.raises(ValueError, match="objective: must be score or channel_mean"):
        synthesize(m, "conv3", [0], SynthesisConfig(steps=1, objective="sum"))


def _conv_bn_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.BatchNorm2d(5))
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    return net.eval()


def test_fold_batchnorm_keeps_outputs_and_removes_the_bns():
    from fvaudit.engine.synthesis.render import fold_batchnorm

    net = _conv_bn_net()
    x = torch.randn(2, 3, 8, 8)
    folded, n = fold_batchnorm(net, x, ["4"])
    assert n == 2 and isinstance(folded[1], torch.nn.Identity) and isinstance(folded[4], torch.nn.Identity)
    assert isinstance(net[1], torch.nn.BatchNorm2d)  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    # a conv whose own output is captured keeps its meaning: that pair is not folded
    folded, n = fold_batchnorm(net, x, ["0", "4"])
    assert n == 1 and isinstance(folded[1], torch.nn.BatchNorm2d) and isinstance(folded[4], torch.nn.Identity)


def test_fold_batchnorm_refuses_a_conv_output_used_twice():
    from fvaudit.engine.synthesis.render import fold_batchnorm

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.out = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.Identity()
            self.bn.running_mean.fill_(0.5)
            self.bn.running_var.fill_(4.0)

        def forward(self, x):
            y = self.conv(x)
            return self.out(self.bn(y) + y)   # folding would change the second use of y

    net = Residual().eval()
    folded, n = fold_batchnorm(net, torch.randn(1, 3, 4, 4), ["out"])
    assert n == 0 and folded is net
    # captured at the BN itself, the forward stops there: folding is exact for what is computed
    assert fold_batchnorm(net, torch.randn(1, 3, 4, 4), ["bn"])[1] == 1


def test_own_channel_conv_is_that_channel_of_the_full_conv():
    from fvaudit.engine.synthesis.render import _own_channel_conv

    torch.manual_seed(1)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2).eval()
    x = torch.randn(3, 4, 9, 9)
    units = torch.tensor([5, 0, 5])
    with torch.no_grad():
        full = conv(x)
        own = _own_channel_conv(conv, x, units)
    assert own.shape == (3, 1, *full.shape[2:])
    torch.testing.assert_close(own[:, 0], full[torch.arange(3), units], rtol=1e-5, atol=1e-5)


def test_render_speedups_leave_the_result_unchanged():
    """Own-channel conv, BN folding and channels_last change the arithmetic, not the images."""
    from fvaudit.engine.synthesis.render import producing_conv, synthesis_module

    m = load_model("fmnist-cnn")
    ex = torch.randn(2, 1, 28, 28)
    assert producing_conv(m.module, "conv3", ex) == "conv3" and producing_conv(m.module, "relu3", ex) is None
    base = SynthesisConfig(steps=15, lr=0.08, seed=4, channels_last=False, fold_bn=False, own_channel_only=False)
    plain = synthesize(m, "relu3", [1, 6, 9], base)
    fast = synthesize(m, "relu3", [1, 6, 9], SynthesisConfig(steps=15, lr=0.08, seed=4))
    np.testing.assert_allclose(fast.activation, plain.activation, rtol=1e-3)
    assert np.abs(fast.images.astype(int) - plain.images.astype(int)).max() <= 1
    # the caller's module is never modified: the render runs its own (channels_last) copy
    assert synthesis_module(m, ["conv3"], torch.device("cpu"), channels_last=True) is not m.module
    assert m.module.conv1.weight.is_contiguous()


def test_cpu_batch_cap_by_pixels():
    from fvaudit.engine.synthesis.render import batch_size

    assert batch_size(SynthesisConfig(), (3, 224, 224)) == 4          # 4 × 224² pixels per batch on a CPU
    assert batch_size(SynthesisConfig(), (1, 28, 28)) == 32           # small images: batch_units decides
    assert batch_size(SynthesisConfig(cpu_pixels_per_batch=0), (3, 224, 224)) == 32
    assert batch_size(SynthesisConfig(device="cuda"), (3, 224, 224)) == 32
    assert batch_size(SynthesisConfig(cpu_pixels_per_batch=10), (3, 224, 224)) == 1
    with pytest.raises(ValueError, match="cpu_pixels_per_batch"):
        SynthesisConfig(cpu_pixels_per_batch=-1).validate()
