"""scikit-learn digits as a one-class split."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from anomaly_core.data import (
    DataError,
    default_data_config,
    eval_batches,
    load_split,
    train_iterator,
)


def digits_cfg(**overrides):
    cfg = default_data_config()
    cfg.source = "digits"
    cfg.image_size = 16
    cfg.channels = 1
    cfg.normal_digit = 3
    cfg.read_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def test_one_class_split_counts():
    target = load_digits().target
    n_normal = int((target == 3).sum())  # 183
    n_test_normal = int(round(n_normal * 0.3))
    n_val = int(round((n_normal - n_test_normal) * 0.1))
    cfg = digits_cfg()
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    assert len(val) == n_val
    assert len(train) == n_normal - n_test_normal - n_val
    assert (train.labels() == 0).all() and (val.labels() == 0).all()
    counts = test.defect_counts()
    assert counts.pop("good") == n_test_normal
    assert counts == {f"digit_{d}": 20 for d in range(10) if d != 3}
    ids = [{r.path for r in s.records} for s in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    # Every normal image is in exactly one split.
    normal_ids = {f"digits/{i}" for i in np.flatnonzero(target == 3)}
    assert ids[0] | ids[1] | {r.path for r in test.records if r.label == 0} == normal_ids
    assert not test.has_masks


def test_split_is_seeded_and_all_anomalies_option():
    a = [r.path for r in load_split(digits_cfg(), "train").records]
    assert a == [r.path for r in load_split(digits_cfg(), "train").records]
    assert a != [r.path for r in load_split(digits_cfg(seed=1), "train").records]
    test = load_split(digits_cfg(digits_per_anomalous_class=0), "test")
    target = load_digits().target
    assert int(test.labels().sum()) == int((target != 3).sum())


def test_digits_batches_are_upsampled():
    cfg = digits_cfg()
    train = load_split(cfg, "train")
    batch = next(eval_batches(cfg, train, batch_size=4))
    assert batch["image"].shape == (4, 16, 16, 1)
    # Shrinking the 16 px image back by 2x2 block means must identify its own
    # source among all 1797 digits.
    all_images = load_digits().images / 16.0
    for row in range(4):
        blocks = batch["image"][row, :, :, 0].reshape(8, 2, 8, 2).mean((1, 3))
        nearest = np.argmin(((all_images - blocks) ** 2).sum((1, 2)))
        assert f"digits/{nearest}" == train.records[batch["index"][row]].path
    assert next(train_iterator(cfg, global_batch_size=2, seed=0))["image"].shape == (2, 16, 16, 1)


def test_bad_normal_digit():
    with pytest.raises(DataError, match="config.data.normal_digit=12"):
        load_split(digits_cfg(normal_digit=12), "train")
