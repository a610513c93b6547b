"""Corrupted MNIST through tensorflow-datasets' mock data (nothing is downloaded)."""

import numpy as np
import pytest

from anomaly_core.data import (
    MNIST_CORRUPTIONS,
    DataError,
    default_data_config,
    eval_batches,
    load_split,
    mnist_corrupted,
    train_iterator,
)

tfds = pytest.importorskip("tensorflow_datasets")

NUM_EXAMPLES = 10  # per mocked split


def mnist_cfg(tmp_path, **overrides):
    cfg = default_data_config()
    cfg.source = "mnist_corrupted"
    cfg.image_size = 28
    cfg.channels = 1
    cfg.test_per_corruption = 4
    cfg.val_fraction = 0.2
    cfg.tfds_data_dir = str(tmp_path / "tfds")  # empty: only the mock can answer
    cfg.tfds_download = False
    cfg.read_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


@pytest.fixture(name="splits", scope="module")
def fixture_splits(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mnist")
    mnist_corrupted.load_tfds_images.cache_clear()
    cfg = mnist_cfg(tmp_path)
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        splits = {s: load_split(cfg, s) for s in ("train", "val", "test")}
    mnist_corrupted.load_tfds_images.cache_clear()  # never leak mock data
    return cfg, splits


def test_the_fifteen_reference_corruptions():
    assert len(MNIST_CORRUPTIONS) == 15 and MNIST_CORRUPTIONS[0] == "identity"
    assert "canny_edges" not in MNIST_CORRUPTIONS
    builder = tfds.builder_cls("mnist_corrupted")
    names = {c.name for c in builder.BUILDER_CONFIGS}
    assert set(MNIST_CORRUPTIONS) < names


def test_protocol_counts(splits):
    _, s = splits
    assert (len(s["train"]), len(s["val"])) == (8, 2)  # 10 minus 20%
    test = s["test"]
    assert len(test) == 15 * 4
    counts = test.defect_counts()
    assert counts.pop("good") == 4 and set(counts) == set(MNIST_CORRUPTIONS[1:])
    assert set(counts.values()) == {4}
    labels = test.labels()
    assert labels[:4].tolist() == [0] * 4 and (labels[4:] == 1).all()
    assert not any(sp.has_masks for sp in s.values())
    assert test.arrays.shape == (60, 28, 28, 1) and test.arrays.dtype == np.uint8
    train_ids = {r.path for r in s["train"].records}
    assert not train_ids & {r.path for r in s["val"].records}


def test_pipeline_shapes(splits):
    cfg, s = splits
    batch = next(train_iterator(cfg, global_batch_size=4, seed=0, split=s["train"]))
    assert batch["image"].shape == (4, 28, 28, 1)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    batches = list(eval_batches(cfg, s["test"], batch_size=16))
    assert len(batches) == 4  # ceil(60 / 16)
    assert sum(int(b["valid"].sum()) for b in batches) == 60
    assert not any(b["mask"].any() for b in batches)
    # Eval images are the raw pixels / 255 (28 -> 28 is no resize).
    np.testing.assert_allclose(batches[0]["image"][0], s["test"].arrays[0] / 255.0, atol=1e-7)


def test_bad_corruption_names(tmp_path):
    cfg = mnist_cfg(tmp_path, corruptions=("identity", "smudge"))
    with pytest.raises(DataError, match="unknown names \\['smudge'\\]"):
        load_split(cfg, "test")
    cfg = mnist_cfg(tmp_path, corruptions=("fog",))
    with pytest.raises(DataError, match="must include 'identity'"):
        load_split(cfg, "test")


def test_missing_data_without_download_names_the_setting(tmp_path):
    mnist_corrupted.load_tfds_images.cache_clear()
    with pytest.raises(DataError) as e:
        load_split(mnist_cfg(tmp_path), "train")
    assert "config.data.tfds_data_dir" in str(e.value)
    assert "mnist_corrupted/identity" in str(e.value)
