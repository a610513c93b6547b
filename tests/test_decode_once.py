"""Issue 30, item 6: an evaluation decodes each test image once (scoring pass and baseline
share the decoded batches), and the preflight check decodes masks only."""
from __future__ import annotations

import collections

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from anomaly_core import data as data_lib
from anomaly_core.data import image_io
from anomaly_core.evaluation import baseline, evaluation
from anomaly_core.training import parallel
from tests.data_fixtures import make_tree, mean_score_fn, tiny_config


def _config(root: str, **eval_overrides) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "data": tiny_config(root, val_fraction=0.2),
        "eval": {"batch_size": 4, "max_panels": 2, "threshold_rule": "auto", "aupro_fpr_limit": 0.3,
                 "baseline": True, "smoothing_sigma": 1.0, "image_score": "mean_map", **eval_overrides}})


@pytest.fixture
def decoded(monkeypatch) -> collections.Counter:
    """Counts every image_io.decode_image call by path (decode_mask goes through it too)."""
    counts: collections.Counter = collections.Counter()
    real = image_io.decode_image

    def counting(path, *args, **kwargs):
        counts[path] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(image_io, "decode_image", counting)
    return counts


def test_preflight_decodes_masks_only_and_evaluation_each_test_image_once(tmp_path, decoded):
    root = str(tmp_path / "data")
    make_tree(root, n_train=10, n_test_good=3, defects={"crack": 3, "hole": 2}, size=(16, 16))
    config = _config(root)
    splits = data_lib.Splits(config.data)
    test = splits["test"]
    images = [r.path for r in test.records]
    masks = [r.mask_path for r in test.records if r.mask_path]
    assert masks and len(masks) < len(images)

    evaluation.check_splits(config, splits)
    assert {p: decoded[p] for p in images} == {p: 0 for p in images}
    assert {p: decoded[p] for p in masks} == {p: 1 for p in masks}

    decoded.clear()
    mesh = parallel.make_mesh()
    with jax.set_mesh(mesh):
        results = evaluation.evaluate(mean_score_fn(), config, str(tmp_path / "run"), mesh, splits)
    assert {p: decoded[p] for p in images} == {p: 1 for p in images}
    assert {p: decoded[p] for p in masks} == {p: 1 for p in masks}
    train = [r.path for r in splits["train"].records]
    assert {p: decoded[p] for p in train} == {p: 1 for p in train}  # the baseline's mean image

    # The baseline's numbers are those of its own pass over the test split (bit for bit).
    alone = baseline.evaluate(config.data, test, train=splits["train"], smoothing_sigma=1.0, fpr_limit=0.3,
                              batch_size=4)
    assert results["baseline"] == alone
    assert set(alone) >= {"image_auroc", "image_auroc_map_max", "pixel_auroc", "pixel_auprc", "pixel_aupro"}


def test_without_baseline_the_train_split_is_not_decoded(tmp_path, decoded):
    root = str(tmp_path / "data")
    make_tree(root, n_train=6, n_test_good=2, defects={"crack": 2}, size=(16, 16))
    config = _config(root, baseline=False)
    splits = data_lib.Splits(config.data)
    mesh = parallel.make_mesh()
    with jax.set_mesh(mesh):
        results = evaluation.evaluate(mean_score_fn(), config, str(tmp_path / "run"), mesh, splits)
    assert "baseline" not in results
    assert not any(decoded[r.path] for r in splits["train"].records)


def test_check_splits_still_refuses_masks_empty_at_model_size(tmp_path, decoded):
    root = str(tmp_path / "data")
    make_tree(root, n_train=4, n_test_good=2, defects={"crack": 2}, size=(16, 16))
    config = _config(root)
    splits = data_lib.Splits(config.data)
    for r in splits["test"].records:
        if r.mask_path:  # masks of a single pixel vanish at 4 px
            mask = np.zeros((16, 16), np.uint8)
            mask[7, 7] = 255
            Image.fromarray(mask).save(r.mask_path)
    config.data.image_size = 4
    with pytest.raises(ValueError, match="every ground-truth mask is empty at config.data.image_size=4"):
        evaluation.check_splits(config, splits)
    assert not any(decoded[r.path] for r in splits["test"].records)
