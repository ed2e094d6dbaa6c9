import numpy as np
import pytest
import torch
from torch import nn

from fvaudit.engine.scans.activations import TopK, check_k, scan, topk_from_scores, unit_scores
from fvaudit.engine.data.images import ArrayImageSet, FolderImageSet, ImageSetError
from fvaudit.engine.models.loaded import LoadedModel, ModelError
from fvaudit.engine.models.sources import load_model


def test_unit_scores_conv_worked_example():
    # unit 0: [[1, 2], [0, -3]] -> 1 + 4 + 0 + 9 = 14 ; unit 1: all 0.5 -> 4 * 0.25 = 1
    out = torch.tensor([[[[1.0, 2.0], [0.0, -3.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    assert unit_scores(out).tolist() == [[14.0, 1.0]]


def test_unit_scores_tokens_and_fc():
    # tokens [B=1, T=3, D=2]: unit 0 over tokens 1,2,3 -> 1+4+9 = 14 ; unit 1: 0+1+0 = 1
    tok = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]]])
    assert unit_scores(tok).tolist() == [[14.0, 1.0]]
    fc = torch.tensor([[-2.0, 3.5]])
    assert unit_scores(fc).tolist() == [[-2.0, 3.5]]
    with pytest.raises(ValueError, match="2-D, 3-D or 4-D"):
        unit_scores(torch.zeros(2))


def test_topk_ties_break_to_smaller_id_across_batches():
    scores = np.array([[1.0, 5.0], [3.0, 5.0], [3.0, 1.0], [2.0, 5.0], [3.0, 0.0]], dtype=np.float32)
    # unit 0: 3.0 at ids 1, 2, 4 -> top-2 = [1, 2]; unit 1: 5.0 at ids 0, 1, 3 -> [0, 1]
    tk = TopK(2, 2)
    tk.update(np.array([0, 1]), torch.from_numpy(scores[:2]))
    tk.update(np.array([2, 3, 4]), torch.from_numpy(scores[2:]))
    ids, vals = tk.result()
    assert ids.tolist() == [[1, 2], [0, 1]]
    assert vals.tolist() == [[3.0, 3.0], [5.0, 5.0]]


def test_topk_matches_lexicographic_reference_on_random_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(500, 7)).astype(np.float32)  # heavy ties
    ids, vals = topk_from_scores(scores, 10)
    for j in range(7):
        ref = sorted(range(500), key=lambda i: (-scores[i, j], i))[:10]
        assert ids[j].tolist() == ref
    scores[3] = np.nan  # a skipped image never enters a top-k
    ids, _ = topk_from_scores(scores, 500 - 1)
    assert all(3 not in row for row in ids.tolist())


def test_bad_k_and_empty_set():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        check_k(0, 10)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        check_k(-3, 10)
    with pytest.raises(ValueError, match="larger than the image set"):
        check_k(11, 10)
    with pytest.raises(ImageSetError, match="empty"):
        check_k(1, 0)
    with pytest.raises(ImageSetError, match="empty"):
        ArrayImageSet("x", np.zeros((0, 28, 28), np.uint8), np.zeros(0), ["a"])


class _Known(nn.Module):
    """Unit j of layer 'act' = pixel mean * (j + 1): hand-checkable scores."""

    def __init__(self):
        super().__init__()
        self.act = nn.Identity()
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        feats = torch.stack([m, 2 * m], dim=1)[:, :, None, None].expand(-1, -1, 2, 2)
        a = self.act(feats)
        return self.head(a.mean(dim=(2, 3)))


def test_scan_exact_scores_topk_and_memmap(tmp_path):
    imgs = np.stack([np.full((4, 4), v, np.uint8) for v in [10, 40, 20, 40, 0]])
    ds = ArrayImageSet("known", imgs, np.zeros(5, np.int64), ["c"])
    pre = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]
    lm = LoadedModel("known", _Known(), pre, ["c"], (1, 4, 4), "test", "test")
    res = scan(lm, ds, ["act"], k=3, batch_size=2, out_dir=tmp_path)
    ls = res.layers["act"]
    # a_0(x) = 4 * v^2 (2x2 spatial), a_1 = 4 * (2v)^2
    expected = np.array([[4 * v * v, 16 * v * v] for v in [10, 40, 20, 40, 0]], np.float32)
    np.testing.assert_allclose(np.asarray(ls.scores), expected)
    assert ls.topk_ids.tolist() == [[1, 3, 2], [1, 3, 2]]  # tie 40/40 -> smaller id first
    assert ls.dead_units == []
    on_disk = np.load(ls.path, mmap_mode="r")
    assert on_disk.dtype == np.float32 and on_disk.shape == (5, 2)


def test_scan_demo_model_dead_units_and_errors():
    from fvaudit.engine.data.images import open_image_set

    m = load_model("fmnist-cnn")
    ds = open_image_set("fashion-mnist:train", limit=512)
    res = scan(m, ds, ["relu3", "conv3"], k=5, batch_size=200)
    relu, conv = res.layers["relu3"], res.layers["conv3"]
    assert relu.scores.shape == (512, 128) and relu.topk_ids.shape == (128, 5)
    assert (np.asarray(relu.scores) >= 0).all()
    assert len(relu.dead_units) > 0 and conv.dead_units == []  # pre-ReLU conv outputs are never all-zero
    for u in relu.dead_units[:3]:
        assert np.asarray(relu.scores)[:, u].max() == 0
    with pytest.raises(ModelError, match="unknown layer"):
        scan(m, ds, ["relu9"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        scan(m, ds, ["relu3"], k=0)


def test_scan_folder_with_corrupt_image_skips_and_counts(image_folder):
    (image_folder / "cat" / "junk.png").write_bytes(b"not a png")  # fails at indexing
    ds = FolderImageSet(image_folder)
    p = sorted((image_folder / "dog").iterdir())[0]
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # cut after indexing: fails at decode
    m = load_model("fmnist-cnn")
    res = scan(m, ds, ["relu3"], k=3, batch_size=3, max_skipped_share=0.5)   # 1 of 8: above the default 1 %
    assert len(res.skipped) == 1 and res.skipped[0][0] == 4
    assert res.n_skipped == 2 and res.n_images == 8
    assert np.isnan(np.asarray(res.layers["relu3"].scores)[4]).all()
    assert 4 not in res.layers["relu3"].topk_ids
