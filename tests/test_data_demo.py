"""The bundled-texture demo dataset: layout, reproducibility, cache, exact masks."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from anomaly_core.data import (
    DEMO_DEFECTS,
    DataError,
    default_data_config,
    demo_textures,
    eval_batches,
    load_split,
    train_iterator,
)


def small_cfg(root, **overrides):
    cfg = default_data_config()
    cfg.source = "demo"
    cfg.root = str(root)
    cfg.image_size = 16
    cfg.demo_crop_size = 32
    cfg.demo_num_train = 10
    cfg.demo_num_test_good = 3
    cfg.demo_num_test_defect = 8
    cfg.read_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def read_tree(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def read_png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def read_marker(folder):
    with open(os.path.join(folder, demo_textures.MARKER)) as f:
        return json.load(f)


def test_textures_are_bundled_and_rgb():
    for name in demo_textures.DEMO_TEXTURES:
        texture = demo_textures.load_texture(name)
        assert texture.ndim == 3 and texture.shape[-1] == 3
        assert texture.dtype == np.float32 and 0 <= texture.min() < texture.max() <= 1
    with pytest.raises(DataError, match="config.data.demo_texture"):
        demo_textures.load_texture("marble")


def test_demo_splits_and_batches(tmp_path):
    cfg = small_cfg(tmp_path)
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val)) == (9, 1)
    assert test.defect_counts() == {
        "foreign_patch": 2,
        "good": 3,
        "hole": 2,
        "scratch": 2,
        "stain": 2,
    }
    assert test.has_masks and all(r.category == "demo_brick" for r in test.records)
    batch = next(train_iterator(cfg, global_batch_size=3, seed=0))
    assert batch["image"].shape == (3, 16, 16, 3)
    masks = np.concatenate([b["mask"][b["valid"]] for b in eval_batches(cfg, test, batch_size=4)])
    assert [m.any() for m in masks] == [r.label == 1 for r in test.records]


def test_rebuild_is_byte_identical_and_seed_changes_it(tmp_path):
    a = demo_textures.ensure_demo_dataset(str(tmp_path / "a"), small_cfg("."))
    b = demo_textures.ensure_demo_dataset(str(tmp_path / "b"), small_cfg("."))
    assert read_tree(a) == read_tree(b)
    c = demo_textures.ensure_demo_dataset(str(tmp_path / "c"), small_cfg(".", demo_seed=1))
    tree_a, tree_c = read_tree(a), read_tree(c)
    assert tree_a.keys() == tree_c.keys()
    assert tree_a["train/good/000.png"] != tree_c["train/good/000.png"]


def test_stale_cache_is_rebuilt_not_reused(tmp_path):
    folder = demo_textures.ensure_demo_dataset(str(tmp_path), small_cfg("."))
    marker = read_marker(folder)
    assert marker["seed"] == 0 and marker["num_train"] == 10
    assert len(marker["textures_sha256"]) == 64
    first = os.stat(os.path.join(folder, "train", "good", "000.png")).st_mtime_ns
    # Same parameters: reused untouched.
    demo_textures.ensure_demo_dataset(str(tmp_path), small_cfg("."))
    assert os.stat(os.path.join(folder, "train", "good", "000.png")).st_mtime_ns == first
    # Other parameters: rebuilt, old files gone.
    demo_textures.ensure_demo_dataset(str(tmp_path), small_cfg(".", demo_num_train=4))
    assert sorted(os.listdir(os.path.join(folder, "train", "good"))) == [
        f"{i:03d}.png" for i in range(4)
    ]
    assert read_marker(folder)["num_train"] == 4
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp


def test_foreign_folder_is_never_overwritten(tmp_path):
    os.makedirs(tmp_path / "demo_brick" / "train")
    with pytest.raises(DataError, match="not written by the demo builder"):
        demo_textures.ensure_demo_dataset(str(tmp_path), small_cfg("."))


def test_masks_cover_exactly_the_defects(tmp_path):
    params = demo_textures.DemoParams(
        crop_size=48, num_train=1, num_test_good=1, num_test_defect=12
    )
    folder = str(tmp_path / "demo")
    demo_textures.build_demo_dataset(folder, params)
    seen = set()
    for ex in demo_textures.generate_demo_examples(params):
        saved = read_png(os.path.join(folder, ex.folder, ex.stem + ".png"))
        np.testing.assert_array_equal(saved, ex.image)
        if ex.defect == "good":
            assert not ex.mask.any()
            continue
        seen.add(ex.defect)
        mask = read_png(os.path.join(folder, "ground_truth", ex.defect, ex.stem + "_mask.png"))
        assert set(np.unique(mask)) == {0, 255}
        np.testing.assert_array_equal(mask > 0, ex.mask)
        # Outside the mask the defective image is the clean crop, bit for bit.
        np.testing.assert_array_equal(ex.image[~ex.mask], ex.clean[~ex.mask])
        changed = np.abs(ex.image.astype(int) - ex.clean.astype(int)).max(-1) > 0
        assert changed[ex.mask].mean() > 0.8, ex.defect
    assert seen == set(DEMO_DEFECTS)


def test_crop_too_large_is_rejected(tmp_path):
    with pytest.raises(DataError, match="demo_crop_size=300"):
        demo_textures.ensure_demo_dataset(str(tmp_path), small_cfg(".", demo_crop_size=300))


def test_every_defect_survives_resizing_to_the_quickstart_resolution(tmp_path):
    """At the quickstart's resolution no defective test image of the demo loses its whole mask
    (a thin scratch can vanish when masks are resized and binarised at 0.5)."""
    from configs.quickstart import get_config

    cfg = get_config().data
    cfg.root = str(tmp_path)
    test = load_split(cfg, "test")
    assert len(test) == cfg.demo_num_test_good + cfg.demo_num_test_defect
    from anomaly_core.data.pipeline import ExampleLoader

    loader = ExampleLoader(test, cfg)
    for i, record in enumerate(test.records):
        _, mask = loader.base(i)
        assert mask.shape == (cfg.image_size, cfg.image_size)
        if record.label == 1:
            assert mask.sum() > 0, f"{record.path}: its defect vanished at {cfg.image_size}x{cfg.image_size}"
        else:
            assert mask.sum() == 0
