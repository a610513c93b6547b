"""MVTec / folder layout: split contents, validation slice, and bad input."""

import os

import numpy as np
import pytest
from data_fixtures import (
    DEFECT_BOX,
    make_tree,
    png_with_header_size,
    tiny_config,
    truncate,
    write_image,
)
from PIL import Image

from anomaly_core.data import (
    MVTEC_CATEGORIES,
    MVTEC_URL,
    DataError,
    eval_batches,
    load_split,
    mvtec,
)


@pytest.fixture(name="tree")
def fixture_tree(tmp_path):
    make_tree(str(tmp_path), n_train=10, n_test_good=3, defects={"crack": 2, "hole": 3})
    return str(tmp_path)


def test_counts_per_split_and_defect(tree):
    cfg = tiny_config(tree)  # val_fraction 0.1 of 10 -> 1
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (9, 1, 8)
    assert test.defect_counts() == {"crack": 2, "good": 3, "hole": 3}
    assert train.has_masks and test.has_masks
    assert not {r.path for r in train.records} & {r.path for r in val.records}
    assert all(r.label == 0 and r.mask_path is None for r in train.records)
    assert [r.path for r in test.records] == sorted(r.path for r in test.records)


def test_labels_and_masks_agree(tree):
    cfg = tiny_config(tree, image_size=20)
    test = load_split(cfg, "test")
    for r in test.records:
        assert (r.label == 1) == (r.defect != "good") == (r.mask_path is not None)
        if r.mask_path:
            stem = os.path.splitext(os.path.basename(r.path))[0]
            assert r.mask_path.endswith(os.path.join(r.defect, stem + "_mask.png"))
    # 24x20 images resized to 20x20: only rows scale (by 20/24).
    batch = next(iter(eval_batches(cfg, test, batch_size=len(test))))
    top, left, bottom, right = DEFECT_BOX
    for i, label in zip(batch["index"], batch["label"]):
        mask = batch["mask"][i]
        assert label == test.records[i].label
        if label == 0:
            assert mask.sum() == 0
        else:
            assert mask[:, left:right].sum() == mask.sum() > 0
            rows = np.flatnonzero(mask.any(1))
            assert abs(rows[0] - top * 20 / 24) <= 1 and abs(rows[-1] + 1 - bottom * 20 / 24) <= 1
            # The white defect box is where the mask is (red channel 255 -> 1.0;
            # the noise elsewhere is at most 200 / 255, mean 0.39).
            red = batch["image"][i][..., 0]
            assert red[mask > 0].mean() > 0.85 and red[mask == 0].mean() < 0.5


def test_validation_slice_is_seeded(tree):
    def val_paths(seed):
        return [
            r.path
            for r in load_split(tiny_config(tree, seed=seed, val_fraction=0.3), "val").records
        ]

    assert val_paths(0) == val_paths(0)
    assert len(val_paths(0)) == 3
    assert any(val_paths(s) != val_paths(0) for s in (1, 2, 3))


def test_validation_members_counts():
    assert mvtec.validation_members(209, 0.1, 0, "bottle").sum() == 21
    assert mvtec.validation_members(5, 0.01, 0, "x").sum() == 1  # at least one
    assert mvtec.validation_members(2, 0.9, 0, "x").sum() == 1  # never all
    assert mvtec.validation_members(10, 0.0, 0, "x").sum() == 0


def test_pooled_categories_prefix_defects(tmp_path):
    make_tree(str(tmp_path), "aa", n_train=4, defects={"crack": 1})
    make_tree(str(tmp_path), "bb", n_train=6, defects={"crack": 2}, seed=1)
    cfg = tiny_config(str(tmp_path), categories=("aa", "bb"), val_fraction=0.25)
    test = load_split(cfg, "test")
    assert test.defect_counts() == {"aa/crack": 1, "aa/good": 3, "bb/crack": 2, "bb/good": 3}
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    # Slice per category: round(4 * .25) = 1 and round(6 * .25) = 2 (half to even).
    assert [r.category for r in val.records] == ["aa", "bb", "bb"]
    assert len(train) == 10 - 3


def test_all_means_the_fifteen_categories():
    assert len(MVTEC_CATEGORIES) == 15
    assert mvtec.resolve_categories(("all",)) == MVTEC_CATEGORIES
    assert mvtec.resolve_categories("bottle") == ("bottle",)


def test_folder_layout_without_category_and_normal_dirs(tmp_path):
    # The COVID-19 CT layout: <root>/{train,test,ground_truth}, 'normal' folders.
    make_tree(str(tmp_path), category="", n_train=5, train_dir="normal", defects={"covid": 2})
    cfg = tiny_config(str(tmp_path), source="folder", val_fraction=0.2)
    assert len(load_split(cfg, "train")) == 4
    test = load_split(cfg, "test")
    assert test.defect_counts() == {"covid": 2, "normal": 3}
    assert test.labels().tolist() == [1, 1, 0, 0, 0]


def test_folder_without_ground_truth_has_no_masks(tmp_path):
    make_tree(str(tmp_path), category="", n_train=3, defects={"bad": 2})
    os.rename(tmp_path / "ground_truth", tmp_path / "gt_elsewhere")
    cfg = tiny_config(str(tmp_path), source="folder")
    test = load_split(cfg, "test")
    assert not test.has_masks and all(r.mask_path is None for r in test.records)
    with pytest.raises(DataError, match="ground_truth not found"):
        load_split(tiny_config(str(tmp_path / ".."), categories=(tmp_path.name,)), "test")


def test_explicit_val_dir(tree, tmp_path):
    val_dir = str(tmp_path / "myval")
    make_tree(val_dir, category="", n_train=0, n_test_good=2, defects={"dent": 1})
    # Class folders of the val layout live in <val_dir>/test/ here: point at it and
    # give it a ground_truth sibling inside.
    os.rename(os.path.join(val_dir, "ground_truth"), os.path.join(val_dir, "test", "ground_truth"))
    cfg = tiny_config(tree, val_dir=os.path.join(val_dir, "test"))
    val = load_split(cfg, "val")
    assert val.defect_counts() == {"dent": 1, "good": 2} and val.has_masks
    assert len(load_split(cfg, "train")) == 10  # no slice taken


def test_missing_root_names_setting_and_url(tmp_path):
    with pytest.raises(DataError) as e:
        load_split(tiny_config(""), "train")
    assert "config.data.root" in str(e.value) and MVTEC_URL in str(e.value)
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError) as e:
        load_split(tiny_config(missing), "train")
    assert missing in str(e.value) and MVTEC_URL in str(e.value)


def test_missing_category_lists_found_ones(tree):
    with pytest.raises(DataError) as e:
        load_split(tiny_config(tree, categories=("bottle",)), "test")
    msg = str(e.value)
    assert os.path.join(tree, "bottle") in msg and "config.data.categories" in msg
    assert "['widget']" in msg and MVTEC_URL in msg


def test_empty_train_folder(tmp_path):
    os.makedirs(tmp_path / "widget" / "train" / "good")
    with pytest.raises(DataError, match="No readable training images"):
        load_split(tiny_config(str(tmp_path)), "train")


def test_broken_train_files_are_skipped_and_counted(tree):
    good = os.path.join(tree, "widget", "train", "good")
    truncate(os.path.join(good, "000.png"))
    open(os.path.join(good, "001.png"), "wb").close()
    with open(os.path.join(good, "002.png"), "w") as f:
        f.write("text, not pixels")
    with open(os.path.join(good, "notes.txt"), "w") as f:
        f.write("x")
    png_with_header_size(os.path.join(good, "003.png"), 60_000, 60_000)
    open(os.path.join(good, ".DS_Store"), "wb").close()  # hidden: ignored
    outside = write_image(os.path.join(tree, "outside.png"), np.zeros((24, 20, 3), np.uint8))
    os.remove(os.path.join(good, "004.png"))
    os.symlink(outside, os.path.join(good, "004.png"))
    cfg = tiny_config(tree, val_fraction=0.0)
    train = load_split(cfg, "train")
    assert len(train) == 10 - 5
    reasons = dict(train.skipped)
    assert len(reasons) == 6
    assert "truncated" in reasons[os.path.join(good, "000.png")]
    assert "empty file" in reasons[os.path.join(good, "001.png")]
    assert "not an image file" in reasons[os.path.join(good, "002.png")]
    assert "extension '.txt'" in reasons[os.path.join(good, "notes.txt")]
    assert "max_image_pixels" in reasons[os.path.join(good, "003.png")]
    assert "outside the dataset folder" in reasons[os.path.join(good, "004.png")]
    with pytest.raises(DataError, match="000.png.*config.data.strict"):
        load_split(tiny_config(tree, strict=True), "train")


def test_defect_without_mask_names_both_paths(tree):
    mask = os.path.join(tree, "widget", "ground_truth", "hole", "001_mask.png")
    os.remove(mask)
    with pytest.raises(DataError) as e:
        load_split(tiny_config(tree), "test")
    assert os.path.join(tree, "widget", "test", "hole", "001.png") in str(e.value)
    assert mask in str(e.value)


def test_mask_size_mismatch_names_both_files(tree):
    mask = os.path.join(tree, "widget", "ground_truth", "crack", "000_mask.png")
    write_image(mask, np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError) as e:
        load_split(tiny_config(tree), "test")
    assert mask in str(e.value) and "10x10" in str(e.value) and "20x24" in str(e.value)


def test_unreadable_mask_is_an_error(tree):
    mask = os.path.join(tree, "widget", "ground_truth", "crack", "001_mask.png")
    truncate(mask)
    with pytest.raises(DataError, match="Mask of .*001.png is unusable"):
        load_split(tiny_config(tree), "test")


def test_mask_named_like_its_image_is_found(tree):
    gt = os.path.join(tree, "widget", "ground_truth", "crack")
    os.rename(os.path.join(gt, "000_mask.png"), os.path.join(gt, "000.png"))
    test = load_split(tiny_config(tree), "test")
    assert test.records[0].mask_path == os.path.join(gt, "000.png")


def test_image_modes_in_a_tree(tmp_path):
    make_tree(str(tmp_path), n_train=1, n_test_good=0, defects={})
    good = tmp_path / "widget" / "train" / "good"
    rgb = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    write_image(str(good / "000.png"), rgb)
    write_image(str(good / "001.png"), (rgb[..., 0].astype(np.uint16) * 257))
    write_image(str(good / "002.png"), Image.fromarray(rgb).convert("P"))
    write_image(str(good / "003.tif"), Image.fromarray(rgb).convert("CMYK"))
    write_image(str(good / "004.png"), Image.fromarray(rgb).convert("RGBA"))
    write_image(str(good / "005.png"), rgb[..., 0])
    for channels in (1, 3):
        cfg = tiny_config(str(tmp_path), channels=channels, val_fraction=0.0, image_size=8)
        split = load_split(cfg, "train")
        assert len(split) == 6 and not split.skipped
        batch = next(iter(eval_batches(cfg, split, batch_size=6)))
        images = batch["image"]
        assert images.shape == (6, 8, 8, channels) and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        # 16-bit (x * 257) / 65535 equals 8-bit x / 255: same pixels as the L image.
        np.testing.assert_allclose(images[1], images[5], atol=1e-6)
        np.testing.assert_allclose(images[4], images[0], atol=1e-6)  # alpha dropped
        np.testing.assert_allclose(images[3], images[0], atol=1e-6)  # CMYK round trip
