"""The input pipeline (engine/data/pipeline.py): DataLoader workers, decode size, decode cache,
skipped-share failure, mixed-precision flags (issue 15, items 1-3)."""
import errno
import logging

import numpy as np
import pytest
import torch
from PIL import Image


from fvaudit.engine.data import pipeline
from fvaudit.engine.scans.activations import layer_scores, scan, unit_scores
from fvaudit.engine.attack.config import AttackConfig, Target
from fvaudit.engine.attack.run import evaluate_accuracy, run_attack
from fvaudit.engine.data.images import DecodeCache, FolderImageSet, decode_image
from fvaudit.engine.models.sources import load_model
from fvaudit.engine.data.pipeline import SkippedShareError, amp_enabled, decode_size_for
from fvaudit.engine.progress import Cancelled, NullReporter


def make_jpeg_folder(root, per_class=8, classes=("a", "b", "c"), size=(120, 90), seed=0):
    """Smooth random photos-like JPEGs (a blurred noise field upscaled), class folders."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BICUBIC).save(root / c / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def demo():
    return load_model("fmnist-cnn")


@pytest.fixture
def jpegs(tmp_path):
    return make_jpeg_folder(tmp_path / "jpegs")


@pytest.fixture(autouse=True)
def _default_options():
    before = pipeline.options()
    yield
    pipeline.configure(**{f: getattr(before, f) for f in before.__dataclass_fields__})


class Recorder(NullReporter):
    def __init__(self):
        super().__init__()
        self.logs = []

    def log(self, message, **info):
        self.logs.append(message)


def _reference_scores(model, ds, layer, size, batch):
    """What a scan must compute: the model's preprocess on decode_image(path, size), one forward per batch."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(ds), batch):
            x = model.preprocess_many([decode_image(ds.paths[i], size) for i in range(s, min(s + batch, len(ds)))])
            out.append(layer_scores(model.module.eval(), x, [layer])[0][layer].numpy())
    return np.concatenate(out)


def test_decode_size_rule_and_draft_decoding(tmp_path, demo):
    p = tmp_path / "x.jpg"
    Image.fromarray(np.full((375, 500, 3), 120, np.uint8)).save(p)
    assert decode_size_for(demo) == 32                       # 28 · 256 / 224
    assert decode_image(p).shape == (375, 500, 3)            # full resolution for display
    # draft: 375 // 32 = 11 → DCT scale 1/8 → 63×47, shorter side 47 > 32 → resized to 43×32
    assert decode_image(p, 32).shape == (32, 43, 3)
    assert decode_image(p, 256).shape == (256, 341, 3)       # 500·256/375 = 341.3 → 341
    assert decode_image(p, 400).shape == (375, 500, 3)       # never upscaled


def test_simplejpeg_and_pillow_draft_decode_the_same_pixels(tmp_path, monkeypatch):
    """The fast JPEG path (simplejpeg, libjpeg-turbo's scaled IDCT) is an acceleration only:
    with or without it, every decode size gives the same pixels, colour and grey."""
    from fvaudit.engine.data import images

    assert images._simplejpeg is not None                      # a declared dependency
    root = make_jpeg_folder(tmp_path / "j", per_class=3, classes=("a",), size=(500, 375))
    grey = root / "a" / "grey.jpg"
    Image.open(root / "a" / "000.jpg").convert("L").save(grey, quality=85)
    paths = sorted((root / "a").iterdir())
    sizes = (None, 28, 32, 64, 120, 256, 400)
    fast = {(p, s): decode_image(p, s) for p in paths for s in sizes}
    monkeypatch.setattr(images, "_simplejpeg", None)
    for (p, s), a in fast.items():
        b = decode_image(p, s)
        assert a.shape == b.shape and np.array_equal(a, b), (p.name, s)
    assert fast[(grey, 32)].shape == (32, 43) and fast[(paths[0], 64)].shape == (64, 85, 3)


def test_dataloader_scan_equals_in_process_scan_bit_for_bit(jpegs, demo):
    ds = FolderImageSet(jpegs)
    p = ds.paths[5]
    p.write_bytes(p.read_bytes()[:300])   # header fine, pixels cut: skipped at decode, same rows in both
    ref = scan(demo, ds, ["relu3", "relu1"], k=4, batch_size=7, workers=0, max_skipped_share=0.5)
    for workers in (1, 2):
        got = scan(demo, ds, ["relu3", "relu1"], k=4, batch_size=7, workers=workers, max_skipped_share=0.5)
        assert [i for i, _ in got.skipped] == [i for i, _ in ref.skipped] == [5]
        for layer in ("relu3", "relu1"):
            a, b = np.asarray(ref.layers[layer].scores), np.asarray(got.layers[layer].scores)
            assert np.array_equal(a, b, equal_nan=True)
            assert np.array_equal(ref.layers[layer].topk_ids, got.layers[layer].topk_ids)
            assert np.array_equal(ref.layers[layer].topk_scores, got.layers[layer].topk_scores)
    # and both are exactly the model's forward on the pipeline's pixels
    expected = np.asarray(ref.layers["relu3"].scores).copy()
    keep = [i for i in range(len(ds)) if i != 5]
    sub = FolderImageSet.from_index("x", ds.class_names, [ds.paths[i] for i in keep], ds.labels[keep])
    np.testing.assert_array_equal(expected[keep], _reference_scores(demo, sub, "relu3", 32, 7))


def test_efficientnet_scan_equals_the_full_resolution_path(tmp_path):
    """At decode size 256 the pipeline's resize is the model's own (then the identity): a scan
    through workers equals the forward on full-resolution decodes, bit for bit."""
    lite = load_model("efficientnet-lite0")
    ds = FolderImageSet(make_jpeg_folder(tmp_path / "big", per_class=2, classes=("a", "b"), size=(400, 300)))
    res = scan(lite, ds, ["_blocks.5"], k=2, batch_size=3, workers=2)
    with torch.inference_mode():
        x = lite.preprocess_many([decode_image(p) for p in ds.paths])
        full = layer_scores(lite.module.eval(), x[:3], ["_blocks.5"])[0]["_blocks.5"].numpy()
        full2 = layer_scores(lite.module.eval(), x[3:], ["_blocks.5"])[0]["_blocks.5"].numpy()
    np.testing.assert_array_equal(np.asarray(res.layers["_blocks.5"].scores), np.concatenate([full, full2]))


def _png_folder(root, n=4, size=(16, 16)):
    rng = np.random.default_rng(1)
    (root / "c").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "c" / f"{i}.png")
    return root


def test_decode_cache_bound_and_lru_eviction_are_exact(tmp_path):
    entry = 16 + 16 * 16 * 3                    # 16-byte header + 16×16 RGB pixels
    cache = DecodeCache(tmp_path / "cache", max_bytes=2 * entry + 100)
    ds = FolderImageSet(_png_folder(tmp_path / "imgs"), cache=cache)
    key = lambda i: DecodeCache.key(ds.paths[i], 16)

    def load(i):
        a = ds.load_input(i, 16)
        cache.sync()
        return a

    load(0), load(1)
    assert cache.keys() == [key(0), key(1)] and cache.total_bytes == 2 * entry
    load(0)                                      # a hit makes 0 the most recently used
    assert cache.keys() == [key(1), key(0)]
    load(2)                                      # over the bound: the least recently used (1) goes
    assert cache.keys() == [key(0), key(2)] and cache.total_bytes == 2 * entry
    assert not (cache.root / key(1)).exists() and (cache.root / key(0)).exists()
    assert (cache.hits, cache.misses, cache.evictions) == (1, 3, 1)
    assert sorted(p.name for p in cache.root.rglob("*.px")) == sorted(k.split("/")[1] for k in (key(0), key(2)))
    np.testing.assert_array_equal(load(0), decode_image(ds.paths[0], 16))
    # reopened: the index is rebuilt from the files, and a smaller bound evicts at once
    again = DecodeCache(tmp_path / "cache", max_bytes=entry)
    assert again.total_bytes == entry and len(again.keys()) == 1 and again.evictions == 1


def test_decode_cache_holds_model_input_size_pixels_and_a_second_scan_reads_it(jpegs, tmp_path, demo):
    cache = DecodeCache(tmp_path / "cache", max_bytes=10**8)
    ds = FolderImageSet(jpegs, cache=cache)
    first = scan(demo, ds, ["relu3"], k=3, batch_size=8, workers=2, cache="on")
    assert (cache.hits, cache.misses) == (0, 24)
    arr = cache.read(DecodeCache.key(ds.paths[0], 32))
    cache.drain()
    assert arr.shape == (32, 43, 3)              # 120×90 photo → 32 on the shorter side, not full size
    second = scan(demo, ds, ["relu3"], k=3, batch_size=8, workers=2, cache="on")
    assert (cache.hits, cache.misses) == (24, 24)
    plain = scan(demo, FolderImageSet(jpegs), ["relu3"], k=3, batch_size=8, workers=0)
    for r in (first, second):
        assert np.array_equal(np.asarray(r.layers["relu3"].scores), np.asarray(plain.layers["relu3"].scores))


def test_auto_cache_is_used_only_when_a_full_pass_fits(jpegs, tmp_path, demo):
    small = DecodeCache(tmp_path / "small", max_bytes=1000)        # 24 images × ~4 KB do not fit
    scan(demo, FolderImageSet(jpegs, cache=small), ["relu3"], k=3, workers=0)
    assert (small.hits, small.misses) == (0, 0) and not list(small.root.rglob("*.px"))
    big = DecodeCache(tmp_path / "big", max_bytes=10**6)
    scan(demo, FolderImageSet(jpegs, cache=big), ["relu3"], k=3, workers=0)
    assert big.misses == 24
    off = DecodeCache(tmp_path / "off", max_bytes=10**6)
    scan(demo, FolderImageSet(jpegs, cache=off), ["relu3"], k=3, workers=0, cache="off")
    assert off.misses == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_disk_skips_the_cache_with_one_warning_and_the_scan_completes(jpegs, tmp_path, demo, monkeypatch,
                                                                             caplog, workers):
    def full_disk(self, f, arr):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(DecodeCache, "_write_file", full_disk)
    cache = DecodeCache(tmp_path / "cache", max_bytes=10**8)
    rep = Recorder()
    with caplog.at_level(logging.WARNING, logger="fvaudit.engine.data.pipeline"):
        res = scan(demo, FolderImageSet(jpegs, cache=cache), ["relu3"], k=3, batch_size=5, workers=workers,
                   cache="on", reporter=rep)
    assert res.skipped == [] and res.n_images == 24
    plain = scan(demo, FolderImageSet(jpegs), ["relu3"], k=3, batch_size=5, workers=0)
    assert np.array_equal(np.asarray(res.layers["relu3"].scores), np.asarray(plain.layers["relu3"].scores))
    warnings = [m for m in rep.logs if "decode cache" in m]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert len([r for r in caplog.records if "decode cache" in r.getMessage()]) == 1
    assert not list(cache.root.rglob("*.px")) and cache.total_bytes == 0
    assert "No space left" in cache.write_error


def test_a_scan_with_too_many_unreadable_images_fails_naming_the_count(tmp_path, demo):
    root = make_jpeg_folder(tmp_path / "j", per_class=5, classes=("a", "b"))
    ds = FolderImageSet(root)
    ds.paths[3].write_bytes(ds.paths[3].read_bytes()[:200])
    with pytest.raises(SkippedShareError, match=r"1 of 10 images .* failed to decode \(10\.00%\), more than the allowed 1%"):
        scan(demo, ds, ["relu3"], k=3, workers=0)
    assert scan(demo, ds, ["relu3"], k=3, workers=0, max_skipped_share=0.1).skipped[0][0] == 3   # 1 ≤ 10 % of 10
    pipeline.configure(max_skipped_share=0.1)
    assert len(scan(demo, ds, ["relu3"], k=3, workers=0).skipped) == 1
    ds.paths[4].write_bytes(b"")
    with pytest.raises(SkippedShareError, match="2 of 10 images"):
        scan(demo, ds, ["relu3"], k=3, workers=2)


def test_amp_flags_are_off_on_cpu_and_selectable():
    assert amp_enabled("cpu") is False and amp_enabled("cuda") is True and amp_enabled("cuda:1") is True
    assert amp_enabled("cuda", amp=False) is False and amp_enabled("cpu", amp=True) is True
    pipeline.configure(amp=False)
    assert amp_enabled("cuda") is False
    pipeline.configure(amp=None)
    assert amp_enabled("cuda") is True
    assert AttackConfig().amp is None
    x = torch.ones((1, 2, 2, 2), dtype=torch.bfloat16)
    s = unit_scores(x)
    assert s.dtype == torch.float32 and s.tolist() == [[4.0, 4.0]]


def test_autocast_path_runs_on_cpu_and_keeps_float32_scores(jpegs, demo):
    ds = FolderImageSet(jpegs)
    f32 = scan(demo, ds, ["relu3"], k=3, workers=0)
    b16 = scan(demo, ds, ["relu3"], k=3, workers=0, amp=True)   # torch.autocast("cpu", bfloat16) + channels_last
    a, b = np.asarray(f32.layers["relu3"].scores), np.asarray(b16.layers["relu3"].scores)
    assert b.dtype == np.float32 and b16.layers["relu3"].topk_scores.dtype == np.float32
    assert not np.array_equal(a, b)                              # bf16 really ran
    np.testing.assert_allclose(b, a, rtol=0.1, atol=1e-2 * float(a.max()))
    assert demo.module.conv1.weight.is_contiguous()              # the model is handed back as it was


def _folder_attack_setup(tmp_path, demo):
    train = FolderImageSet(make_jpeg_folder(tmp_path / "train", per_class=12, seed=1))
    val = FolderImageSet(make_jpeg_folder(tmp_path / "val", per_class=4, seed=2))
    init = scan(demo, train, ["relu3"], k=3, workers=0)
    cfg = dict(kind="push_down", targets=[Target("relu3", list(range(8)))], k=3, steps=6, lr=1e-3, batch_size=10,
               attack_batch_size=6, eval_every=3, eval_size=0, seed=5, alpha=0.5, checkpoint_every=2)
    return train, val, init, cfg


def test_attack_batches_from_workers_equal_in_process_ones_and_resume_exactly(tmp_path, demo, monkeypatch):
    """Streaming (not preloaded) training and attack batches, decoded ahead by 2 workers: same
    path as in-process loading, and a run resumed mid-way follows the uninterrupted one."""
    monkeypatch.setattr(pipeline, "PRELOAD_LIMIT_MB", 0)
    train, val, init, cfg = _folder_attack_setup(tmp_path, demo)
    ref = run_attack(demo, train, val, AttackConfig(**cfg, workers=0), init_scans=init.layers)
    got = run_attack(demo, train, val, AttackConfig(**cfg, workers=2), out_dir=tmp_path / "a", init_scans=init.layers)
    assert [h["loss"] for h in got.history] == [h["loss"] for h in ref.history]
    for (k, a), (_, b) in zip(ref.final_model.module.state_dict().items(), got.final_model.module.state_dict().items()):
        assert torch.equal(a, b), k

    class CancelAt(NullReporter):
        seen = 0

        def advance(self, done, total=None, **info):
            self.seen = done

        def cancelled(self):
            return self.seen >= 3

    with pytest.raises(Cancelled):
        run_attack(demo, train, val, AttackConfig(**cfg, workers=2), out_dir=tmp_path / "b", init_scans=init.layers,
                   reporter=CancelAt())
    resumed = run_attack(demo, train, val, AttackConfig(**cfg, workers=2), out_dir=tmp_path / "b",
                         init_scans=init.layers)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in ref.history]
    assert resumed.acc_final == ref.acc_final


def test_attack_autocast_on_cpu_runs_and_evaluation_streams(tmp_path, demo):
    train, val, init, cfg = _folder_attack_setup(tmp_path, demo)
    res = run_attack(demo, train, val, AttackConfig(**{**cfg, "steps": 2}, amp=True, workers=0),
                     init_scans=init.layers)
    assert res.steps == 2 and all(np.isfinite(h["loss"]) for h in res.history)
    assert all(p.is_contiguous() for p in res.final_model.module.parameters())
    acc0 = evaluate_accuracy(demo, val, val.ids, batch_size=5, workers=0)
    assert evaluate_accuracy(demo, val, val.ids, batch_size=5, workers=2) == acc0
