import numpy as np
import pytest

from fvaudit.engine.data.images import (DecodeCache, FolderImageSet, ImageSetError, fashion_mnist, open_image_set,
                                        read_idx, stratified_ids)
from fvaudit.engine.data.pipeline import iter_batches
from tests.conftest import make_image_folder


def test_folder_ids_labels_and_class_names_are_stable(image_folder):
    a = FolderImageSet(image_folder)
    b = FolderImageSet(image_folder)
    assert a.class_names == ["cat", "dog"]
    assert len(a) == 8
    assert a.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.name for p in a.paths] == [p.name for p in b.paths]
    assert a.paths[5].parent.name == "dog" and a.paths[5].name == "img_001.png"
    assert a.label_name(5) == "dog"
    assert a.load_array(0).shape == (16, 16, 3)


def test_corrupt_and_non_image_files_are_skipped_and_counted(image_folder):
    (image_folder / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (image_folder / "dog" / "notes.txt").write_text("ignored: not an image extension")
    ds = FolderImageSet(image_folder)
    assert len(ds) == 8
    assert len(ds.skipped) == 1 and ds.skipped[0].path.endswith("broken.jpg")


def test_truncated_image_is_skipped_at_decode_not_fatal(image_folder):
    from fvaudit.engine.models.sources import load_model

    ds = FolderImageSet(image_folder)
    p = ds.paths[2]
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header fine, pixels missing
    skipped = []
    m = load_model("fmnist-cnn")
    batches = list(iter_batches(ds, ds.ids, 3, m.preprocess_many, on_skip=lambda i, r: skipped.append(i)))
    assert skipped == [2]
    assert sum(len(b.ids) for b in batches) == 7


def test_empty_folder_errors_clearly(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ImageSetError, match="holds no readable images"):
        FolderImageSet(tmp_path / "empty")
    with pytest.raises(ImageSetError, match="does not exist"):
        FolderImageSet(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ImageSetError, match="no class subfolders"):
        FolderImageSet(tmp_path / "flat")


def test_decode_cache_second_pass_reads_cache(tmp_path):
    root = make_image_folder(tmp_path / "imgs", n_per_class=3)
    cache = DecodeCache(tmp_path / "cache")
    ds = FolderImageSet(root, cache=cache)
    first = [ds.load_input(i, 28) for i in ds.ids]
    cache.sync()
    assert (cache.hits, cache.misses) == (0, 6)
    second = [ds.load_input(i, 28) for i in ds.ids]
    cache.sync()
    assert (cache.hits, cache.misses) == (6, 6)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    ds.load_array(0)                      # full resolution (display) never goes through the cache
    cache.sync()
    assert (cache.hits, cache.misses) == (6, 6)


def test_fashion_mnist_from_debian_package():
    tr = fashion_mnist("train")
    te = fashion_mnist("test")
    assert len(tr) == 60000 and len(te) == 10000
    assert tr.load_array(0).shape == (28, 28) and tr.load_array(0).dtype == np.uint8
    assert tr.class_names[9] == "Ankle boot"
    assert np.bincount(te.labels).tolist() == [1000] * 10
    assert tr.class_index("Bag") == 8 and tr.class_index(3) == 3
    with pytest.raises(ImageSetError, match="unknown class 'Goldfish'"):
        tr.class_index("Goldfish")
    sub = open_image_set("fashion-mnist:test", limit=50)
    assert len(sub) == 50 and sub.key.startswith("fashion-mnist:test[")
    assert np.bincount(sub.labels).tolist() == [5] * 10          # stratified: 1000 of each class → 5 each
    np.testing.assert_array_equal(sub.load_array(7), te.load_array(int(sub.parent_ids[7])))
    assert open_image_set("fashion-mnist:test", limit=50).parent_ids.tolist() == sub.parent_ids.tolist()


def test_stratified_limit_rule_is_proportional_seeded_and_sorted():
    labels = np.repeat([0, 1, 2], [50, 30, 20])                  # ids in class order, like a folder
    ten = stratified_ids(labels, 10)
    assert np.bincount(labels[ten]).tolist() == [5, 3, 2]          # 10 · (50, 30, 20) / 100
    seven = stratified_ids(labels, 7)
    # 7 · (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 → floors 3, 2, 1; the one left goes to the largest remainder (class 0)
    assert np.bincount(labels[seven]).tolist() == [4, 2, 1]
    assert seven.tolist() == sorted(seven.tolist()) and len(set(seven.tolist())) == 7
    assert stratified_ids(labels, 7).tolist() == seven.tolist()    # deterministic
    assert stratified_ids(labels, 7, seed=1).tolist() != seven.tolist()
    # a class's pick depends only on (seed, class): class 2's ids are its first 1 of rng([0, 2])'s permutation
    c2 = np.flatnonzero(labels == 2)
    assert seven[labels[seven] == 2].tolist() == [int(c2[np.random.default_rng([0, 2]).permutation(20)[0]])]
    assert stratified_ids(labels, 100).tolist() == list(range(100))
    with pytest.raises(ImageSetError, match="positive"):
        stratified_ids(labels, 0)


def test_a_limited_folder_holds_every_class(tmp_path):
    root = make_image_folder(tmp_path / "imgs", n_per_class=6, classes=("a", "b", "c"))
    ds = open_image_set(root, limit=6)
    assert np.bincount(ds.labels).tolist() == [2, 2, 2]            # not the first 6 ids (all of class a)
    assert ds.load_input(0, 28).shape == (16, 16, 3)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ImageSetError):
        read_idx(p)


def test_folder_from_index_keeps_ids_when_files_are_added(image_folder):
    ds = FolderImageSet(image_folder)
    frozen = FolderImageSet.from_index("db:1", ds.class_names, [str(p) for p in ds.paths], ds.labels)
    make_image_folder(image_folder, n_per_class=6, seed=5)  # adds img_004, img_005 per class
    assert len(FolderImageSet(image_folder)) == 12 and len(frozen) == 8
    assert frozen.paths[4].name == "img_000.png" and frozen.label_name(4) == "dog"
    assert frozen.load_array(0).shape == (16, 16, 3)


def _png(path, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)


def test_symlinks_leaving_the_allowed_roots_are_skipped_unopened(tmp_path, monkeypatch):
    """Issue 13 item 1: links to files or folders outside the roots are skipped with the
    reason before anything opens them; links that stay inside are followed."""
    import fvaudit.engine.data.images as images_mod

    outside, root = tmp_path / "outside", tmp_path / "root"
    _png(outside / "o.png", 9)
    _png(outside / "cls" / "p.png", 8)
    _png(root / "a" / "x.png", 1)
    _png(root / "a" / "y.png", 2)
    (root / "a" / "out.png").symlink_to(outside / "o.png")
    (root / "a" / "passwd.png").symlink_to("/etc/passwd")
    (root / "a" / "in.png").symlink_to(root / "a" / "x.png")
    (root / "a" / "sub").symlink_to(outside / "cls", target_is_directory=True)
    (root / "b").symlink_to(outside / "cls", target_is_directory=True)
    opened = []
    real_verify = images_mod._verify_header
    monkeypatch.setattr(images_mod, "_verify_header", lambda p: opened.append(p.name) or real_verify(p))
    ds = FolderImageSet(root)
    assert ds.class_names == ["a"]
    assert [p.name for p in ds.paths] == ["in.png", "x.png", "y.png"]
    assert sorted(opened) == ["in.png", "x.png", "y.png"]            # passwd.png / out.png never opened
    skipped = {s.path.rsplit("/", 1)[-1]: s.reason for s in ds.skipped}
    assert skipped == {"b": "symlink to a path outside the allowed roots",
                       "out.png": "symlink to a path outside the allowed roots",
                       "passwd.png": "symlink to a path outside the allowed roots"}
    # a wider allowed root takes the outside folder in
    wide = FolderImageSet(root, allowed_roots=[tmp_path])
    assert wide.class_names == ["a", "b"]
    assert [p.name for p in wide.paths] == ["in.png", "out.png", "x.png", "y.png", "p.png"]
    assert [s.path.rsplit("/", 1)[-1] for s in wide.skipped] == ["passwd.png"]
    # the root itself outside the allowed roots
    with pytest.raises(ImageSetError, match="outside the allowed roots"):
        FolderImageSet(root, allowed_roots=[outside])


def test_from_index_refuses_a_file_swapped_for_an_outside_link(tmp_path):
    root = tmp_path / "root"
    _png(root / "a" / "x.png", 1)
    _png(tmp_path / "secret.png", 200)
    ds = FolderImageSet(root)
    idx = FolderImageSet.from_index(ds.key, ds.class_names, [str(p) for p in ds.paths], ds.labels,
                                    allowed_roots=[root])
    assert idx.load_array(0)[0, 0] == 1
    (root / "a" / "x.png").unlink()
    (root / "a" / "x.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(OSError, match="outside the allowed roots"):
        idx.load_array(0)


def test_a_limited_set_recorded_before_stratified_limits_reopens_with_its_first_ids(tmp_path):
    """Sets and run directories recorded when a limit meant "the first N ids" keep naming the same images."""
    from fvaudit.engine.data.images import open_image_set, reopen_image_set, subset

    make_image_folder(tmp_path, n_per_class=4, classes=("a", "b", "c"))
    whole = open_image_set(tmp_path)
    legacy_key = subset(whole, np.arange(5)).key           # what the old rule recorded for limit = 5
    old = reopen_image_set(tmp_path, 5, legacy_key)
    assert old.key == legacy_key and list(old.parent_ids) == [0, 1, 2, 3, 4]
    assert list(old.labels) == list(whole.labels[:5]) == [0, 0, 0, 0, 1]
    new = open_image_set(tmp_path, limit=5)                 # today's rule: every class represented
    assert new.key != legacy_key and sorted(set(new.labels.tolist())) == [0, 1, 2]
    assert reopen_image_set(tmp_path, 5, new.key).key == new.key
    with pytest.raises(ImageSetError, match="now opens as"):
        reopen_image_set(tmp_path, 5, "folder:elsewhere[0123]")
