"""Metrics against scikit-learn, brute force and hand-computed cases."""
from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.ndimage
from sklearn import metrics as skm

from anomaly_core.evaluation import metrics, thresholds


def _brute_auroc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def _brute_ap(scores, labels):
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        recall = tp / np.sum(labels == 1)
        ap += (recall - prev_recall) * tp / np.sum(pred)
        prev_recall = recall
    return ap


def _brute_aupro(maps, masks, limit, structure=np.ones((3, 3))):
    regions = []
    for i in range(maps.shape[0]):
        lab, n = scipy.ndimage.label(masks[i], structure=structure)
        regions += [maps[i][lab == r] for r in range(1, n + 1)]
    normal = maps[masks == 0]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(np.mean(normal >= t))
        ys.append(np.mean([np.mean(r >= t) for r in regions]))
    area = 0.0
    for j in range(1, len(xs)):
        x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
        if x1 > limit:
            y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_cut) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied", [False, True])
def test_roc_auc_and_ap_match_sklearn_and_brute_force(seed, tied):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 6, 300).astype(float) if tied else rng.normal(size=300) + labels
    assert metrics.roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.roc_auc(scores, labels) == pytest.approx(_brute_auroc(scores, labels), abs=1e-12)
    ap = metrics.average_precision(scores, labels)
    assert ap == pytest.approx(skm.average_precision_score(labels, scores), abs=1e-12)
    assert ap == pytest.approx(_brute_ap(scores, labels), abs=1e-12)
    fpr, tpr, thr = metrics.roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)


def test_tiny_hand_case_with_ties():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0])
    # pairs (pos, neg): (0.9,0.5)=1, (0.9,0.1)=1, (0.5,0.5)=0.5, (0.5,0.1)=1 -> 3.5 / 4
    assert metrics.roc_auc(scores, labels) == pytest.approx(0.875)
    # thresholds 0.9: P=1 R=1/2; 0.5: P=2/3 R=1 -> AP = 1/2 * 1 + 1/2 * 2/3
    assert metrics.average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)


def test_single_class_and_bad_scores_raise_with_names():
    with pytest.raises(ValueError, match="image AUROC \\(test split\\).*normal"):
        metrics.roc_auc([0.1, 0.2], [0, 0], name="image AUROC (test split)")
    with pytest.raises(ValueError, match="average precision.*anomalous"):
        metrics.average_precision([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.roc_auc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.roc_auc([0.1, 0.3], [0, 2])


def _region_case():
    """Two images; image 0 has two regions touching only by a corner plus one apart."""
    masks = np.zeros((2, 8, 8), np.float32)
    masks[0, 1:3, 1:3] = 1      # 2x2 block
    masks[0, 3, 3] = 1          # touches (2, 2) diagonally: same region under 8-connectivity
    masks[0, 6, 5:8] = 1        # separate region
    masks[1, 4:7, 0:2] = 1
    return masks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    masks = _region_case()
    maps = rng.integers(0, 12, masks.shape).astype(np.float32) + 3 * masks  # many ties
    for limit in (0.3, 0.05, 1.0):
        assert metrics.aupro(maps, masks, limit) == pytest.approx(_brute_aupro(maps, masks, limit), abs=1e-12)


def test_aupro_eight_connectivity_merges_corner_touching_regions():
    masks = np.zeros((1, 4, 4), np.float32)
    masks[0, 0:2, 0:2] = 1  # region A, 4 pixels
    masks[0, 2, 2] = 1      # region B, 1 pixel, touches A by a corner
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 0:2, 0:2] = 0.9
    maps[0, 2, 2] = 0.1
    maps[0, 3, 0] = 0.5     # one of 11 normal pixels
    # 8-connected: one region of 5; curve (0,0) (0,.8) (1/11,.8) (1/11,1) (1,1):
    # area to 0.3 = 0.8/11 + (0.3 - 1/11) -> 1 - 0.2/(11*0.3) = 31/33.
    assert metrics.aupro(maps, masks) == pytest.approx(31 / 33, abs=1e-12)
    # With 4-connectivity it would be two regions (PRO 0.5 at t=0.9) -> 28/33.
    four = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert _brute_aupro(maps, masks, 0.3, structure=four) == pytest.approx(28 / 33)


def test_aupro_interpolates_at_the_fpr_limit():
    masks = np.zeros((1, 2, 5), np.float32)
    masks[0, 0, 0:2] = 1
    maps = np.zeros((1, 2, 5), np.float32)
    maps[0, 0, 0], maps[0, 0, 1] = 0.9, 0.4
    maps[0, 0, 2:5], maps[0, 1, 0] = 0.4, 0.4  # 4 of 8 normal pixels tie with the region pixel
    # curve (0,0) (0,.5) (.5,1) (1,1); PRO at FPR .3 = .5 + .5 * .3/.5 = .8
    # area = .3 * (.5 + .8) / 2 = .195 -> / .3 = .65
    assert metrics.aupro(maps, masks) == pytest.approx(0.65, abs=1e-12)
    fpr, pro = metrics.pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 1, 1])


def test_aupro_perfect_detector_is_one():
    rng = np.random.default_rng(0)
    masks = _region_case()
    maps = rng.random(masks.shape).astype(np.float32) * (1 - masks) + (1 + rng.random(masks.shape)) * masks
    assert metrics.aupro(maps, masks) == 1.0


def test_aupro_is_fast_on_a_million_pixels():
    rng = np.random.default_rng(0)
    masks = np.zeros((100, 128, 128), np.float32)
    masks[:50, 20:50, 30:70] = 1
    masks[:50, 90:100, 90:120] = 1
    maps = rng.random(masks.shape, dtype=np.float32) + 0.3 * masks
    start = time.perf_counter()
    value = metrics.aupro(maps, masks)
    elapsed = time.perf_counter() - start
    assert 0.0 < value < 1.0
    assert elapsed < 5.0, f"aupro on 1.6M pixels took {elapsed:.2f} s"


def test_aupro_rejects_non_binary_masks_and_bad_limit():
    masks = _region_case()
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.aupro(np.zeros_like(masks), masks * 255)
    with pytest.raises(ValueError, match="fpr_limit"):
        metrics.aupro(np.zeros_like(masks), masks, 1.5)
    with pytest.raises(ValueError, match="anomalous region"):
        metrics.aupro(np.zeros_like(masks), np.zeros_like(masks))


def test_binary_metrics_hand_case_and_zero_division():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    target = np.array([1, 0, 1, 0, 1, 0], bool)
    m = metrics.binary_metrics(pred, target)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == m["dice"] == pytest.approx(2 / 3)
    assert m["iou"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(4 / 6)
    empty = metrics.binary_metrics(np.zeros(4, bool), np.zeros(4, bool))
    assert [empty[k] for k in ("precision", "recall", "f1", "iou", "accuracy")] == [1.0] * 5
    missed = metrics.binary_metrics(np.zeros(4, bool), np.array([1, 0, 0, 0], bool))
    assert [missed[k] for k in ("precision", "recall", "f1", "iou")] == [0.0] * 4


def test_gon_reference_confusion_matrix_gives_published_accuracy():
    # docs/METHODS.md 4: GON on corrupted MNIST, TN 1913, FP 87, FN 21567, TP 6433, accuracy 0.278.
    target = np.repeat([0, 0, 1, 1], [1913, 87, 21567, 6433]).astype(bool)
    pred = np.repeat([0, 1, 0, 1], [1913, 87, 21567, 6433]).astype(bool)
    m = metrics.binary_metrics(pred, target)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1913, 87, 21567, 6433)
    assert round(m["accuracy"], 3) == 0.278


@pytest.mark.parametrize("tied", [False, True])
def test_f1_max_matches_sklearn_pr_curve(tied):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 5, 200).astype(float) if tied else rng.normal(size=200) + labels
    precision, recall, _ = skm.precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        expected = np.nanmax(2 * precision * recall / (precision + recall))
    f1, t = metrics.f1_max(scores, labels)
    assert f1 == pytest.approx(expected, abs=1e-12)
    assert metrics.binary_metrics(scores > t, labels)["f1"] == pytest.approx(f1, abs=1e-12)


def test_resize_anomaly_maps_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    ours = metrics.resize_anomaly_maps(maps, (13, 9))
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(13, 9), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def _toy_evaluation_data(seed=0):
    rng = np.random.default_rng(seed)
    n, h, w = 8, 16, 16
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    masks = np.zeros((n, h, w), np.float32)
    masks[4, 2:6, 2:6] = 1
    masks[5, 8:12, 1:3] = 1
    masks[6, 0:3, 10:16] = 1
    masks[7, 10:16, 10:12] = 1
    masks[7, 2, 2] = 1
    maps = rng.random((n, h, w)).astype(np.float32) + 0.8 * masks
    scores = maps.mean(axis=(1, 2)) + 0.05 * labels
    val_maps = rng.random((5, h, w)).astype(np.float32)
    return labels, masks, maps, scores, val_maps.mean(axis=(1, 2)), val_maps


def test_evaluate_matches_individual_metrics_and_labels_splits():
    labels, masks, maps, scores, val_scores, val_maps = _toy_evaluation_data()
    res = metrics.evaluate_anomaly_detection(
        test_scores=scores, test_labels=labels, test_maps=maps, test_masks=masks,
        val_scores=val_scores, val_maps=val_maps)
    s, split = res["scalars"], res["split"]
    assert s["image_auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert s["image_ap"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert s["image_auroc_map_max"] == pytest.approx(skm.roc_auc_score(labels, maps.max(axis=(1, 2))))
    assert s["pixel_auroc"] == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.ravel()))
    assert s["pixel_auprc"] == pytest.approx(skm.average_precision_score(masks.ravel(), maps.ravel()))
    assert s["pixel_aupro"] == pytest.approx(_brute_aupro(maps, masks, 0.3), abs=1e-10)
    assert s["oracle_pixel_f1_max"] == pytest.approx(metrics.f1_max(maps, masks)[0])
    # Thresholds come from validation: mean + 2 std (ddof=0) of the validation normals.
    assert res["thresholds"]["image"]["rule"] == "mean_std"
    t_img = float(np.mean(val_scores) + 2 * np.std(val_scores))
    assert s["image_threshold"] == pytest.approx(t_img)
    cm = thresholds.confusion_matrix(scores, labels, t_img)
    assert {k: s[f"image_{k}"] for k in cm} == cm
    t_pix = float(np.mean(val_maps) + 2 * np.std(val_maps.astype(np.float64)))
    assert s["pixel_threshold"] == pytest.approx(t_pix, rel=1e-6)
    assert s["pixel_dice"] == pytest.approx(metrics.binary_metrics(maps > t_pix, masks)["dice"])
    assert split["image_auroc"] == "test" and split["image_threshold"] == "validation"
    assert split["oracle_image_f1_max"].startswith("test (oracle")
    assert split["pixel_dice"] == "test (threshold fitted on validation)"
    assert set(s) == set(split)
    assert res["counts"]["test_regions"] == 5


def test_evaluate_rules_and_skips():
    labels, masks, maps, scores, val_scores, val_maps = _toy_evaluation_data(1)
    val_labels = np.array([0, 0, 0, 1, 1])
    res = metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=labels,
                                             val_scores=val_scores, val_labels=val_labels)
    assert res["thresholds"]["image"]["rule"] == "f1"
    assert res["scalars"]["image_threshold"] == thresholds.f1_optimal_threshold(val_scores, val_labels)
    assert "pixel_auroc" not in res["scalars"] and "pixel_aupro" in res["skipped"]
    assert "pixel" not in res["thresholds"]
    no_val = metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=labels,
                                                test_maps=maps, test_masks=masks)
    assert no_val["thresholds"] == {} and "image_threshold" in no_val["skipped"]
    assert "image_tp" not in no_val["scalars"] and "pixel_aupro" in no_val["scalars"]
    with pytest.raises(ValueError, match="image AUROC \\(test split\\)"):
        metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=np.zeros(8))
    bad_masks = masks.copy()
    bad_masks[0, 0, 0] = 1
    with pytest.raises(ValueError, match="labelled normal have non-empty masks"):
        metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=labels,
                                           test_maps=maps, test_masks=bad_masks)


def test_per_defect_metrics_against_sklearn():
    labels, masks, maps, scores, val_scores, val_maps = _toy_evaluation_data(2)
    defects = np.array(["good" if l == 0 else ("scratch" if i % 2 else "hole") for i, l in enumerate(labels)])
    defects[4], masks[4] = "stain", 0  # a type whose only mask vanished: no pixel AUROC
    res = metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=labels, test_defects=defects,
                                             test_maps=maps, test_masks=masks)
    per = res["per_defect"]
    assert list(per) == sorted(set(defects[labels == 1]))
    for name, entry in per.items():
        pick = (labels == 0) | (defects == name)
        assert entry["images"] == int(((labels == 1) & (defects == name)).sum())
        assert entry["image_auroc"] == pytest.approx(skm.roc_auc_score(labels[pick], scores[pick]))
        assert entry["image_auroc_map_max"] == pytest.approx(
            skm.roc_auc_score(labels[pick], maps[pick].max(axis=(1, 2))))
        if name == "stain":
            assert "pixel_auroc" not in entry
        else:
            assert entry["pixel_auroc"] == pytest.approx(skm.roc_auc_score(masks[pick].ravel(), maps[pick].ravel()))
    # Without maps only the image AUROC; without defect names no entry at all.
    bare = metrics.per_defect_metrics(scores, labels, defects)
    assert {k: set(v) for k, v in bare.items()} == {k: {"images", "image_auroc"} for k in per}
    assert "per_defect" not in metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=labels)
    with pytest.raises(ValueError, match="defect names must match"):
        metrics.per_defect_metrics(scores, labels, defects[:-1])
