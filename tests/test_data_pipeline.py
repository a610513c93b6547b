"""Grain pipelines: batch format, order, resumption, sharding and eval padding."""

import json
import os

import numpy as np
import pytest
from data_fixtures import make_tree, tiny_config, truncate, write_image

from anomaly_core.data import (
    DataError,
    eval_batches,
    eval_masks,
    eval_plan,
    image_io,
    load_image_folder,
    load_split,
    train_iterator,
    transforms,
)

N_TRAIN = 12


@pytest.fixture(name="root", scope="module")
def fixture_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mvtec"))
    make_tree(root, n_train=N_TRAIN, n_test_good=3, defects={"crack": 2, "hole": 3})
    return root


def cfg_for(root, **overrides):
    return tiny_config(root, val_fraction=0.0, **overrides)


def take(it, k):
    return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("channels, value_range", [(3, (0.0, 1.0)), (1, (-1.0, 1.0))])
def test_train_batch_format(root, channels, value_range):
    cfg = cfg_for(root, channels=channels, value_range=value_range)
    batch = next(train_iterator(cfg, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 16, 16, channels)
    assert batch["image"].dtype == np.float32
    assert batch["mask"].shape == (4, 16, 16) and batch["mask"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    assert batch["valid"].dtype == bool and batch["valid"].all()
    assert (batch["label"] == 0).all() and not batch["mask"].any()
    lo, hi = value_range
    assert lo <= batch["image"].min() and batch["image"].max() <= hi
    # The noise images span [0, 200/255]: in (-1, 1) that reaches below 0.
    assert (batch["image"].min() < -0.5) == (lo == -1.0)


def test_epochs_are_seeded_permutations(root):
    cfg = cfg_for(root)
    batches = take(train_iterator(cfg, global_batch_size=4, seed=0), 6)
    indices = np.concatenate([b["index"] for b in batches])
    first, second = indices[:N_TRAIN], indices[N_TRAIN:]
    assert sorted(first) == sorted(second) == list(range(N_TRAIN))
    assert not np.array_equal(first, second)  # reshuffled each epoch
    again = take(train_iterator(cfg, global_batch_size=4, seed=0), 6)
    assert_batches_equal(batches, again)
    other = take(train_iterator(cfg, global_batch_size=4, seed=1), 3)
    assert not np.array_equal(np.concatenate([b["index"] for b in other]), first)


def test_augmentation_differs_between_epochs(root):
    cfg = cfg_for(root, augment="crop")
    batches = take(train_iterator(cfg, global_batch_size=N_TRAIN, seed=0), 2)
    order = [np.argsort(b["index"]) for b in batches]
    assert not np.allclose(batches[0]["image"][order[0]], batches[1]["image"][order[1]])


def test_state_round_trip_through_json(root):
    cfg = cfg_for(root)
    it = train_iterator(cfg, global_batch_size=4, seed=3)
    take(it, 5)  # crosses an epoch boundary
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, 4)
    resumed = train_iterator(cfg, global_batch_size=4, seed=3)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 4), expected)


def test_process_shards_reassemble_the_global_batch(root):
    cfg = cfg_for(root)
    single = take(train_iterator(cfg, global_batch_size=4, seed=0), 4)
    shards = [
        take(train_iterator(cfg, global_batch_size=4, seed=0, process_index=p, process_count=2), 4)
        for p in range(2)
    ]
    for b, whole in enumerate(single):
        parts = [shards[p][b] for p in range(2)]
        assert all(len(part["index"]) == 2 for part in parts)
        assert not set(parts[0]["index"]) & set(parts[1]["index"])
        for p, part in enumerate(parts):
            for key in whole:
                np.testing.assert_array_equal(part[key], whole[key][p::2])


def test_train_iterator_argument_errors(root):
    cfg = cfg_for(root)
    with pytest.raises(ValueError, match="multiple of process_count=3"):
        train_iterator(cfg, global_batch_size=4, seed=0, process_count=3)
    with pytest.raises(ValueError, match="process_index=2"):
        train_iterator(cfg, global_batch_size=4, seed=0, process_index=2, process_count=2)


@pytest.mark.parametrize("n, batch_size, processes", [(8, 3, 1), (8, 3, 2), (8, 4, 3), (2, 4, 3)])
def test_eval_plan_covers_each_example_once(n, batch_size, processes):
    plans = [eval_plan(n, batch_size, p, processes) for p in range(processes)]
    assert len({len(idx) for idx, _ in plans}) == 1  # same number of steps
    assert all(len(idx) % batch_size == 0 for idx, _ in plans)
    valid = np.concatenate([idx[v] for idx, v in plans])
    assert sorted(valid.tolist()) == list(range(n))
    for idx, _ in plans:
        assert (idx >= 0).all() and (idx < n).all()  # padding repeats real records


@pytest.mark.parametrize("processes", [1, 3])
def test_eval_batches_score_every_example_once(root, processes):
    cfg = cfg_for(root)
    test = load_split(cfg, "test")  # 8 examples
    seen, num_batches, by_index = [], set(), {}
    for p in range(processes):
        batches = list(
            eval_batches(cfg, "test", batch_size=3, process_index=p, process_count=processes)
        )
        num_batches.add(len(batches))
        for b in batches:
            assert b["image"].shape == (3, 16, 16, 3)
            seen += b["index"][b["valid"]].tolist()
            for row in range(3):
                i = int(b["index"][row])
                if i in by_index:  # padding rows repeat a real, identical image
                    np.testing.assert_array_equal(b["image"][row], by_index[i])
                by_index[i] = b["image"][row]
                assert b["label"][row] == test.records[i].label
    assert sorted(seen) == list(range(len(test)))
    assert len(num_batches) == 1
    assert len(eval_batches(cfg, "test", batch_size=3, process_count=processes)) == (
        num_batches.pop()
    )


def test_eval_masks_are_the_eval_batches_masks(root):
    cfg = cfg_for(root, image_size=12)
    test = load_split(cfg, "test")
    batch = next(eval_batches(cfg, test, batch_size=len(test)))
    masks = dict(eval_masks(cfg, test))
    assert sorted(masks) == [i for i, r in enumerate(test.records) if r.mask_path]
    for i in range(len(test)):
        expected = masks.get(i, np.zeros((12, 12), np.float32))
        assert expected.dtype == np.float32
        np.testing.assert_array_equal(batch["mask"][i], expected)
    assert sum(m.sum() for m in masks.values()) > 0


def test_eval_masks_leave_out_an_image_gone_since_listing(tmp_path, caplog):
    make_tree(str(tmp_path), n_train=4, n_test_good=1, defects={"crack": 3})
    cfg = cfg_for(str(tmp_path))
    test = load_split(cfg, "test")
    gone = next(i for i, r in enumerate(test.records) if r.mask_path)
    os.remove(test.records[gone].path)
    assert gone not in dict(eval_masks(cfg, test)) and len(dict(eval_masks(cfg, test))) == 2
    assert f"Skipping {test.records[gone].path}" in caplog.text
    with pytest.raises(image_io.ImageReadError, match="No such file"):
        dict(eval_masks(cfg_for(str(tmp_path), strict=True), test))


def test_eval_image_is_decode_then_resize(root):
    cfg = cfg_for(root, value_range=(-1.0, 1.0))
    test = load_split(cfg, "test")
    batch = next(eval_batches(cfg, test, batch_size=2))
    manual = transforms.resize_image(image_io.decode_image(test.records[1].path), 16)
    np.testing.assert_allclose(batch["image"][1], manual * 2 - 1, atol=1e-6)


def test_unaugmented_cached_training_images_equal_eval_images(root):
    cfg = cfg_for(root, augment="none", cache_images=True)
    train = load_split(cfg, "train")
    evals = next(eval_batches(cfg, train, batch_size=N_TRAIN))
    it = train_iterator(cfg, global_batch_size=N_TRAIN, seed=0)
    for batch in take(it, 2):  # epoch 2 reads the uint16 cache
        np.testing.assert_allclose(batch["image"], evals["image"][batch["index"]], atol=1e-5)


def test_empty_val_split_is_a_clear_error(root):
    with pytest.raises(DataError, match="'val' split is empty.*val_fraction"):
        eval_batches(cfg_for(root), "val", batch_size=2)


def test_load_image_folder(tmp_path, root):
    rgb = np.zeros((10, 12, 3), np.uint8)
    write_image(str(tmp_path / "in" / "b.png"), rgb)
    write_image(str(tmp_path / "in" / "sub" / "a.jpg"), rgb + 100)
    truncate(write_image(str(tmp_path / "in" / "c.png"), rgb + 50))
    with open(tmp_path / "in" / "readme.md", "w") as f:
        f.write("hi")
    cfg = cfg_for(root)
    split = load_image_folder(str(tmp_path / "in"), cfg)
    names = [os.path.relpath(r.path, tmp_path / "in") for r in split.records]
    assert names == ["b.png", os.path.join("sub", "a.jpg")]
    assert [os.path.basename(p) for p, _ in split.skipped] == ["c.png", "readme.md"]
    assert all(r.label == -1 for r in split.records) and not split.has_masks
    assert split.paths == [r.path for r in split.records]
    batch = next(split.batches(4))
    assert batch["valid"].tolist() == [True, True, False, False]
    assert batch["index"].tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(batch["image"][1], 100 / 255, atol=0.02)  # JPEG
    assert len(load_image_folder(str(tmp_path / "in" / "b.png"), cfg)) == 1

    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="folder is empty"):
        load_image_folder(str(tmp_path / "empty"), cfg)
    with pytest.raises(DataError, match="neither an image file nor a folder"):
        load_image_folder(str(tmp_path / "missing"), cfg)
    with pytest.raises(image_io.ImageReadError, match="c.png"):
        load_image_folder(str(tmp_path / "in" / "c.png"), cfg)


def test_file_broken_after_listing_is_named(tmp_path):
    make_tree(str(tmp_path), n_train=4)
    cfg = cfg_for(str(tmp_path))
    split = load_split(cfg, "train")
    truncate(split.records[2].path)  # passes the listing check, fails to decode
    with pytest.raises(image_io.ImageReadError, match="002.png: corrupt or truncated"):
        next(train_iterator(cfg, global_batch_size=4, seed=0, split=split))
