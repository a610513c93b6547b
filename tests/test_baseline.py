"""The no-learning baseline (anomaly_core/evaluation/baseline.py) against brute-force computations."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_core.data import load_split
from anomaly_core.data.pipeline import ExampleLoader
from anomaly_core.evaluation import baseline
from tests.data_fixtures import make_tree, tiny_config


def _images(cfg, split):
    loaded = load_split(cfg, split)
    loader = ExampleLoader(loaded, cfg)
    pairs = [loader.base(i) for i in range(len(loaded))]
    images = np.stack([p[0] for p in pairs]).astype(np.float64)
    lo, hi = cfg.value_range
    return images * (hi - lo) + lo, np.stack([p[1] for p in pairs]), np.array([r.label for r in loaded.records])


@pytest.mark.parametrize("value_range,sigma", [((0.0, 1.0), 0.0), ((-1.0, 1.0), 1.5)])
def test_baseline_matches_brute_force(tmp_path, value_range, sigma):
    make_tree(str(tmp_path), n_train=7, n_test_good=4, defects={"crack": 3, "hole": 2})
    cfg = tiny_config(str(tmp_path), value_range=value_range, val_fraction=0.0)
    train, _, _ = _images(cfg, "train")
    test, masks, labels = _images(cfg, "test")
    mean = train.mean(axis=0)
    np.testing.assert_allclose(baseline.mean_image(cfg, "train", batch_size=3), mean, atol=1e-6)

    maps = np.zeros(test.shape[:3])
    for i in range(len(test)):  # pixel by pixel, channel by channel
        for y in range(test.shape[1]):
            for x in range(test.shape[2]):
                maps[i, y, x] = sum(abs(test[i, y, x, c] - mean[y, x, c]) for c in range(3)) / 3
    if sigma:
        maps = np.stack([ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in maps])
    np.testing.assert_allclose(baseline.anomaly_maps(test, mean, sigma), maps, atol=1e-6)

    out = baseline.evaluate(cfg, "test", smoothing_sigma=sigma, batch_size=4)
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, maps.mean(axis=(1, 2))), abs=1e-9)
    assert out["image_auroc_map_max"] == pytest.approx(roc_auc_score(labels, maps.max(axis=(1, 2))), abs=1e-9)
    pixels = masks.ravel() > 0.5
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(pixels, maps.ravel()), abs=1e-6)
    assert out["pixel_auprc"] == pytest.approx(average_precision_score(pixels, maps.ravel()), abs=1e-6)
    assert 0.0 <= out["pixel_aupro"] <= 1.0
    # the fixture's defects are saturated white boxes: a mean image finds them
    assert out["pixel_auroc"] > 0.9


def test_baseline_without_masks_has_no_pixel_metrics(tmp_path):
    make_tree(str(tmp_path), n_train=4, n_test_good=2, defects={"crack": 2})
    cfg = tiny_config(str(tmp_path), val_fraction=0.0)
    split = load_split(cfg, "test")
    split.has_masks = False
    out = baseline.evaluate(cfg, split)
    assert "pixel_auroc" not in out and "image_auroc" in out
