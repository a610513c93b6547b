"""Threshold rules and the confusion matrix on hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest

from anomaly_core.evaluation import thresholds


def test_mean_std_threshold_uses_population_std():
    # mean 2.5; population variance (2.25 + .25 + .25 + 2.25) / 4 = 1.25
    assert thresholds.mean_std_threshold([1, 2, 3, 4]) == pytest.approx(2.5 + 2 * np.sqrt(1.25))
    assert thresholds.mean_std_threshold([1, 2, 3, 4], k=3.0) == pytest.approx(2.5 + 3 * np.sqrt(1.25))
    # the sample std (ddof=1) would give 2.5 + 2 * 1.2910 = 5.082, which must not be used
    assert thresholds.mean_std_threshold([1, 2, 3, 4]) < 5.0


def test_confusion_matrix_counts_with_strict_inequality():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.5, 0.7, 0.9, 0.3, 0.55])
    # score > 0.5: predicted = [F F T F F T T F T]; a score equal to the threshold is normal
    assert thresholds.confusion_matrix(scores, labels, 0.5) == {"tn": 3, "fp": 1, "fn": 2, "tp": 3}


def test_gon_reference_style_pipeline_by_hand():
    # Normal validation errors: mean 0.2, population std sqrt(0.02 / 5) = 0.0632456
    val_errors = np.array([0.1, 0.2, 0.3, 0.2, 0.2])
    t = thresholds.mean_std_threshold(val_errors)
    assert t == pytest.approx(0.2 + 2 * np.sqrt(0.004))  # 0.326491
    test_errors = np.array([0.15, 0.25, 0.33, 0.40, 0.31, 0.50, 0.20, 0.90])
    test_labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # > 0.326491: normals 0.15 0.25 -> TN, 0.33 0.40 -> FP; anomalies 0.31 0.20 -> FN, 0.50 0.90 -> TP
    assert thresholds.confusion_matrix(test_errors, test_labels, t) == {"tn": 2, "fp": 2, "fn": 2, "tp": 2}
    value, rule = thresholds.fit_threshold(val_errors)
    assert (value, rule) == (t, "mean_std")


def test_f1_optimal_threshold_hand_case():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    # >= 0.8: F1 2/3; >= 0.4: 1/2; >= 0.35: tp 2 fp 1 -> 4/5; >= 0.1: 2/3.
    # Best cut between 0.35 (anomalous) and 0.1 (normal): midpoint 0.225.
    f1, t = thresholds.f1_max(scores, labels)
    assert f1 == pytest.approx(0.8)
    assert t == pytest.approx(0.225)
    assert thresholds.f1_optimal_threshold(scores, labels) == t
    assert thresholds.confusion_matrix(scores, labels, t) == {"tn": 1, "fp": 1, "fn": 0, "tp": 2}


def test_f1_threshold_edge_cases():
    # All anomalous: best is to call everything anomalous, so t is just below the minimum.
    f1, t = thresholds.f1_max([1.0, 2.0], [1, 1])
    assert f1 == 1.0 and t < 1.0 and np.nextafter(t, np.inf) == 1.0
    # Adjacent floats: the midpoint is not representable, the lower score is used.
    lo = 1.0
    hi = float(np.nextafter(lo, 2.0))
    f1, t = thresholds.f1_max([lo, hi], [0, 1])
    assert f1 == 1.0 and t == lo
    assert thresholds.confusion_matrix([lo, hi], [0, 1], t) == {"tn": 1, "fp": 0, "fn": 0, "tp": 1}
    with pytest.raises(ValueError, match="no anomalous labels"):
        thresholds.f1_max([0.1, 0.2], [0, 0])


def test_threshold_sweep_counts_ties_once():
    scores = np.array([3.0, 1.0, 3.0, 2.0, 1.0])
    labels = np.array([1, 0, 0, 1, 1], bool)
    t, tps, fps = thresholds.threshold_sweep(scores, labels, ~labels)
    np.testing.assert_array_equal(t, [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(tps, [1, 2, 3])
    np.testing.assert_array_equal(fps, [1, 1, 2])


def test_fit_threshold_picks_the_rule():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8])
    normal_only = np.array([0, 0, 0, 0, 0])
    with_anomalies = np.array([0, 0, 0, 1, 1])
    assert thresholds.fit_threshold(scores)[1] == "mean_std"
    assert thresholds.fit_threshold(scores, normal_only)[1] == "mean_std"
    value, rule = thresholds.fit_threshold(scores, with_anomalies)
    assert rule == "f1" and value == pytest.approx(0.55)  # between 0.8 and 0.3
    # 'mean_std' with labels uses only the normal scores: mean 0.2, std sqrt(0.02/3)
    value, rule = thresholds.fit_threshold(scores, with_anomalies, rule="mean_std")
    assert rule == "mean_std" and value == pytest.approx(0.2 + 2 * np.sqrt(0.02 / 3))
    with pytest.raises(ValueError, match="'f1' needs anomalous validation examples"):
        thresholds.fit_threshold(scores, normal_only, rule="f1")
    with pytest.raises(ValueError, match="threshold rule must be one of"):
        thresholds.fit_threshold(scores, rule="percentile")
    with pytest.raises(ValueError, match="5 labels for 4 scores"):
        thresholds.fit_threshold(scores[:4], with_anomalies)
