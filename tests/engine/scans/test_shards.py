"""Sharded scans (engine): ranges on batch multiples, exact top-k merge, bit-identical merged scans."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fvaudit.engine.scans.activations import TopK, scan
from fvaudit.engine.data.images import ArrayImageSet, FolderImageSet
from fvaudit.engine.models.sources import load_model
from fvaudit.engine.scans.shards import ShardPart, merge_scans, merge_topk, scan_shard, shard_ranges

NINF = float("-inf")


def test_shard_ranges_cut_on_batch_multiples():
    assert shard_ranges(10, 3, 2) == [(0, 2), (2, 6), (6, 10)]        # 5 batches dealt 1, 2, 2
    assert shard_ranges(10, 1, 4) == [(0, 10)]
    assert shard_ranges(3, 4, 2) == [(0, 0), (0, 2), (2, 2), (2, 3)]   # 2 batches, 4 shards: two empty
    assert shard_ranges(1000, 4, 256) == [(0, 256), (256, 512), (512, 768), (768, 1000)]   # last one short
    assert shard_ranges(1100, 3, 100) == [(0, 300), (300, 700), (700, 1100)]            # 11 batches: 3, 4, 4
    with pytest.raises(ValueError):
        shard_ranges(10, 0, 2)


def test_merge_topk_ties_across_shard_boundaries_hand_checked():
    # unit 0: score 5 at ids 1 (shard A), 4 and 6 (shard B); 7 at id 5 → 5, then 1, 4 (smaller ids win the 5s)
    # unit 1: ids 2 (A) and 3 (A) NaN → -inf; B holds one finite score: -inf ties go to smaller ids
    a = (np.array([[1, 0, 2], [0, 1, 2]]), np.array([[5, 1, 0], [3, 2, NINF]], np.float32))
    b = (np.array([[5, 4, 6], [6, 4, 5]]), np.array([[7, 5, 5], [9, NINF, NINF]], np.float32))
    ids, scores = merge_topk([a, b], 4)
    assert ids.tolist() == [[5, 1, 4, 6], [6, 0, 1, 2]]
    assert scores.tolist() == [[7, 5, 5, 5], [9, 3, 2, NINF]]
    ids_ba, _ = merge_topk([b, a], 4)                 # the order the parts come in does not matter
    assert ids_ba.tolist() == ids.tolist()
    nan_part = (np.array([[8]]), np.array([[np.nan]], np.float32))
    i2, s2 = merge_topk([(np.array([[9]]), np.array([[NINF]], np.float32)), nan_part], 2)
    assert i2.tolist() == [[8, 9]] and s2.tolist() == [[NINF, NINF]]   # NaN ranks as -inf; smaller id first
    zeros = merge_topk([(np.array([[3]]), np.array([[0.0]], np.float32)),
                        (np.array([[1]]), np.array([[-0.0]], np.float32))], 2)
    assert zeros[0].tolist() == [[1, 3]]                               # -0.0 == 0.0: the smaller id first
    assert merge_topk([(np.zeros((2, 0), np.int64), np.zeros((2, 0), np.float32))], 3)[0].shape == (2, 0)


def test_merge_topk_equals_streaming_topk_on_random_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(60, 7)).astype(np.float32)      # heavy ties
    scores[rng.random(scores.shape) < 0.1] = np.nan
    scores[5] = -0.0
    ids = np.arange(60)
    one = TopK(7, 6)
    for s in range(0, 60, 8):
        one.update(ids[s:s + 8], torch.from_numpy(scores[s:s + 8]))
    parts = []
    for start, stop in [(0, 13), (13, 14), (14, 41), (41, 60)]:
        tk = TopK(7, 6)
        tk.update(ids[start:stop], torch.from_numpy(scores[start:stop]))
        parts.append(tk.result())
    m_ids, m_scores = merge_topk(parts, 6)
    want_ids, want_scores = one.result()
    assert np.array_equal(m_ids, want_ids)
    assert m_scores.tobytes() == want_scores.tobytes()


def _dup_folder(root, n: int = 23, broken=(6, 15)):
    """28×28 grayscale PNGs; image i repeats image i % 5 (equal scores across shards); ``broken`` don't decode."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    paths = []
    for i in range(n):
        d = root / ("a" if i < n // 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:03d}.png"
        if i in broken:
            p.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        else:
            Image.fromarray(base[i % 5]).save(p)
        paths.append(p)
    labels = [0 if i < n // 2 else 1 for i in range(n)]
    return FolderImageSet.from_index(f"folder:{root}", ["a", "b"], paths, labels)


@pytest.mark.parametrize("shards,batch", [(3, 4), (4, 2), (8, 4)])
def test_sharded_scan_is_bit_identical_with_ties_and_skipped_images(tmp_path, shards, batch):
    ds = _dup_folder(tmp_path / "imgs")
    m = load_model("fmnist-cnn")
    layers = ["relu3", "fc1"]                                             # a conv and a fully connected layer
    one = scan(m, ds, layers, k=7, batch_size=batch, out_dir=tmp_path / "one", max_skipped_share=0.5)
    parts = []
    for i, (start, stop) in enumerate(shard_ranges(len(ds), shards, batch)):
        if start == stop:
            parts.append(ShardPart(start, stop, {}))
            continue
        res = scan_shard(m, ds, layers, 7, start, stop, batch_size=batch, out_dir=tmp_path / f"part{i}")
        assert res.layers["relu3"].scores.shape[0] == stop - start
        parts.append(ShardPart.from_scan(start, stop, res))
    merged = merge_scans(parts, len(ds), 7, ds.key, out_dir=tmp_path / "merged", max_skipped_share=0.5)
    assert [i for i, _ in merged.skipped] == [6, 15] == [i for i, _ in one.skipped]
    assert merged.n_skipped == one.n_skipped == 2 and merged.n_images == 23
    for name in layers:
        a, b = one.layers[name], merged.layers[name]
        assert b.path.read_bytes() == a.path.read_bytes()               # the .npy files, byte for byte
        assert np.array_equal(b.topk_ids, a.topk_ids)
        assert b.topk_scores.tobytes() == a.topk_scores.tobytes()
        assert b.dead_units == a.dead_units
    # the ties are real and cross shard boundaries: image i repeats image i % 5 (6 and 15 do not decode)
    s = np.asarray(one.layers["relu3"].scores)
    assert np.array_equal(s[0], s[5]) and np.array_equal(s[0], s[20])
    tk = merged.layers["relu3"].topk_ids
    assert tk[0].tolist() == [0, 5, 10, 20, 1, 11, 16]   # copies of image 0, then 3 of the 4 copies of image 1
    assert 1 in merged.layers["relu3"].dead_units and tk[1].tolist() == [0, 1, 2, 3, 4, 5, 7]   # all 0: by id


def test_merge_scans_rejects_gaps_and_overlaps(tmp_path):
    imgs = np.stack([np.full((28, 28), v, np.uint8) for v in range(6)])
    ds = ArrayImageSet("six", imgs, np.zeros(6, np.int64), ["c"])
    m = load_model("fmnist-cnn")
    a = ShardPart.from_scan(0, 3, scan_shard(m, ds, ["relu3"], 2, 0, 3, batch_size=3))
    c = ShardPart.from_scan(4, 6, scan_shard(m, ds, ["relu3"], 2, 4, 6, batch_size=3))
    with pytest.raises(ValueError, match="do not tile"):
        merge_scans([a, c], 6, 2, ds.key)
    with pytest.raises(ValueError, match="end at 3"):
        merge_scans([a], 6, 2, ds.key)
    with pytest.raises(ValueError, match="empty or outside"):
        scan_shard(m, ds, ["relu3"], 2, 5, 9)


def test_cli_scan_shards_equals_one_pass(tmp_path, capsys):
    from fvaudit.cli import main

    common = ["scan", "--images", "fashion-mnist:test", "--limit", "700", "--layers", "relu3,relu1", "--k", "5",
              "--batch-size", "128"]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    assert main(common + ["--shards", "3", "--out", str(tmp_path / "three")]) == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*")
                   if p.is_file() and p.suffix in (".npy", ".json") and p.name not in ("config.json", "versions.json"))
    assert len(files) == 6                                   # per layer: the scan's matrix, its copy, the top-k
    for f in files:
        assert (tmp_path / "three" / f).read_bytes() == (tmp_path / "one" / f).read_bytes(), f
    assert not (tmp_path / "three" / "scores" / "parts").exists()


def test_skipped_share_is_checked_on_the_whole_set_not_per_shard(tmp_path):
    """2 of 23 images fail (8.7 %), both in the first 8 ids: that shard alone is 25 % broken."""
    from fvaudit.engine.data.pipeline import SkippedShareError

    ds = _dup_folder(tmp_path / "imgs", broken=(1, 6))
    m = load_model("fmnist-cnn")
    ranges = shard_ranges(len(ds), 3, 4)
    assert ranges == [(0, 8), (8, 16), (16, 23)]
    parts = [ShardPart.from_scan(a, b, scan_shard(m, ds, ["relu3"], 3, a, b, batch_size=4)) for a, b in ranges]
    assert [len(p.skipped) for p in parts] == [2, 0, 0]
    merged = merge_scans(parts, 23, 3, ds.key, max_skipped_share=0.1)          # 8.7 % ≤ 10 %: complete
    assert [i for i, _ in merged.skipped] == [1, 6]
    with pytest.raises(SkippedShareError, match="2 of 23 images"):
        merge_scans(parts, 23, 3, ds.key, max_skipped_share=0.05)
