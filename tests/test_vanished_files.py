"""A file listed at start-up that cannot be read when it is scored (deleted while training
ran, say) is left out by name and counted in metrics.json; the evaluation goes on."""
from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
import pytest

from anomaly_core import data as data_lib
from anomaly_core.evaluation import baseline, evaluation
from anomaly_core.training import parallel
from tests.data_fixtures import make_tree, mean_score_fn, tiny_config


def _config(root: str, **data) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "data": tiny_config(root, val_fraction=0.2, **data),
        "eval": {"batch_size": 4, "max_panels": 4, "threshold_rule": "auto", "aupro_fpr_limit": 0.3,
                 "baseline": True, "smoothing_sigma": 0.0, "image_score": "mean_map"}})


def test_test_image_deleted_after_listing_is_skipped_by_name_and_counted(tmp_path, caplog):
    """Issue 29, item 8 (before: 'Cannot read image ...' aborted the evaluation after training)."""
    root = str(tmp_path / "data")
    make_tree(root, n_train=10, n_test_good=3, defects={"crack": 3}, size=(16, 16))
    config = _config(root)
    splits = data_lib.Splits(config.data)
    test = splits["test"]
    evaluation.check_splits(config, splits)  # listed (and decoded once) at start-up
    gone = test.records[-1].path
    os.remove(gone)  # ... then deleted while the run trains
    mesh = parallel.make_mesh()
    workdir = str(tmp_path / "run")
    with caplog.at_level(logging.WARNING), jax.set_mesh(mesh):
        results = evaluation.evaluate(mean_score_fn(), config, workdir, mesh, splits)
    assert results["evaluation"]["unreadable_files"] == {"count": 1, "paths": [gone]}
    assert results["evaluation"]["test_examples"] == len(test) - 1
    # The baseline (maps from the same scoring pass) covers the same examples as the method.
    assert results["baseline"] == baseline.evaluate(config.data, test, train=splits["train"], fpr_limit=0.3,
                                                    batch_size=4)
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        assert json.load(f)["evaluation"]["unreadable_files"] == {"count": 1, "paths": [gone]}
    with open(os.path.join(workdir, "eval", "scores.csv")) as f:
        text = f.read()
    assert gone not in text and len(text.strip().splitlines()) == len(test)  # a header and the others
    assert f"Skipping {gone}: " in caplog.text
    # config.data.strict: the first unreadable file is the error, as at listing.
    strict = _config(root, strict=True)
    with pytest.raises(Exception, match=f"Cannot read image {gone}"), jax.set_mesh(mesh):
        evaluation.evaluate(mean_score_fn(), strict, str(tmp_path / "strict"), mesh, splits)
