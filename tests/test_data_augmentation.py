"""config.data.augment: the per-category defaults ('auto'), the names, and saved runs' on/off values."""

import json
import os

import numpy as np
import pytest
from data_fixtures import make_tree, tiny_config

from anomaly_core import settings
from anomaly_core.data import augmentation, eval_batches, load_split, train_iterator
from anomaly_core.data.config import validate_data_config
from anomaly_core.program import run_config


@pytest.mark.parametrize("category, kind", [
    ("carpet", "crop"), ("grid", "crop"), ("leather", "crop"), ("tile", "crop"), ("wood", "crop"),
    ("demo_brick", "crop"),  # the built-in demo's texture crops
    ("transistor", "none"), ("bottle", "none"), ("screw", "none"),  # MVTec AD objects
    ("", "none"), ("my_parts", "none"),  # 'folder' source, one's own category names
])
def test_auto_resolves_by_category_kind(category, kind):
    assert augmentation.resolve("auto", category) == kind


@pytest.mark.parametrize("setting", ["crop", "flip", "none"])
def test_explicit_settings_apply_to_every_category(setting):
    assert {augmentation.resolve(setting, c) for c in ("carpet", "transistor", "")} == {setting}


@pytest.mark.parametrize("bad", ["True", "crops", "", True, None])
def test_unknown_setting_is_refused_by_name(bad):
    cfg = tiny_config("/unused")
    with cfg.ignore_type():
        cfg.augment = bad
    with pytest.raises(settings.SettingError, match=r"config\.data\.augment"):
        validate_data_config(cfg)
    with pytest.raises(ValueError, match=r"config\.data\.augment"):
        augmentation.resolve(bad, "carpet")


def test_auto_augments_the_texture_and_not_the_object_when_pooled(tmp_path):
    root = str(tmp_path)
    make_tree(root, "carpet", n_train=6)
    make_tree(root, "widget", n_train=6)
    cfg = tiny_config(root, categories=("carpet", "widget"), val_fraction=0.0, augment="auto")
    train = load_split(cfg, "train")
    categories = np.array([r.category for r in train.records])
    evals = next(eval_batches(cfg, train, batch_size=len(train)))["image"]
    changed = {"carpet": False, "widget": False}
    batches = train_iterator(cfg, global_batch_size=len(train), seed=0)
    for _ in range(3):  # three epochs
        batch = next(batches)
        for image, index in zip(batch["image"], batch["index"]):
            same = np.allclose(image, evals[index], atol=1e-5)
            changed[categories[index]] |= not same
    assert changed == {"carpet": True, "widget": False}


@pytest.mark.parametrize("saved, name", [(True, "crop"), (False, "none")])
def test_saved_on_off_values_read_back_as_names(tmp_path, saved, name):
    with open(os.path.join(tmp_path, run_config.CONFIG_FILE), "w") as f:
        json.dump({"method": "gon", "data": {"augment": saved, "image_size": 16}}, f)
    assert run_config.read(str(tmp_path)).data.augment == name
