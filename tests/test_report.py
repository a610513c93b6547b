"""Evaluation outputs: files parse, atomic writes survive failures, panels render."""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from anomaly_core.evaluation import metrics, report, visualise


@dataclasses.dataclass
class Rec:
    path: str
    label: int
    defect: str


def _case(seed=0, n_normal=3, n_anomalous=3, size=16):
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalous
    records = [Rec(f"/data/test/good/{i:03d}.png", 0, "good") for i in range(n_normal)]
    records += [Rec(f"/data/test/crack/{i:03d}.png", 1, "crack") for i in range(n_anomalous)]
    labels = np.array([r.label for r in records])
    masks = np.zeros((n, size, size), np.float32)
    for i in range(n_normal, n):
        masks[i, 3 + i:7 + i, 2:6] = 1
    maps = rng.random((n, size, size)).astype(np.float32) + masks
    scores = maps.mean(axis=(1, 2)).astype(np.float64)
    images = rng.random((n, size, size, 3)).astype(np.float32)
    recons = np.clip(images + 0.1 * rng.normal(size=images.shape), 0, 1).astype(np.float32)
    val_maps = rng.random((4, size, size)).astype(np.float32)
    results = metrics.evaluate_anomaly_detection(
        test_scores=scores, test_labels=labels, test_maps=maps, test_masks=masks,
        val_scores=val_maps.mean(axis=(1, 2)), val_maps=val_maps)
    predicted = (scores > results["thresholds"]["image"]["value"]).astype(int)
    return records, scores, predicted, images, recons, maps, masks, results


class RecordingWriter:
    """The part of clu's MetricWriter that the report uses (importing clu pulls in TF: 13 s)."""

    def __init__(self):
        self.scalars, self.images, self.flushed = {}, {}, False

    def write_scalars(self, step, scalars):
        assert step == 0
        self.scalars.update(scalars)

    def write_images(self, step, images):
        assert step == 0
        self.images.update(images)

    def flush(self):
        self.flushed = True


def _strict_json(text):
    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=reject)


def test_write_evaluation_files_parse(tmp_path):
    records, scores, predicted, images, recons, maps, masks, results = _case()
    results["extra"] = {"nan": float("nan"), "inf": np.inf, "neg": -np.inf, "n": np.int64(3)}
    writer = RecordingWriter()
    written = report.write_evaluation(
        tmp_path, report.Evaluation(metrics=results, records=records, image_scores=scores, predicted_labels=predicted,
                                    images=images[:4], reconstructions=recons[:4], anomaly_maps=maps, masks=masks),
        max_panels=3, writer=writer, writer_panels=2)

    saved = _strict_json((tmp_path / "metrics.json").read_text())
    assert saved["scalars"]["pixel_aupro"] == results["scalars"]["pixel_aupro"]
    assert saved["thresholds"]["image"]["rule"] == "mean_std"
    assert saved["split"]["image_auroc"] == "test"
    assert saved["extra"] == {"nan": None, "inf": "Infinity", "neg": "-Infinity", "n": 3}

    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [r.path for r in records]
    assert [int(r["label"]) for r in rows] == [r.label for r in records]
    assert [r["defect"] for r in rows] == ["good"] * 3 + ["crack"] * 3
    assert [float(r["score"]) for r in rows] == scores.tolist()  # full precision round trip
    assert [int(r["predicted_label"]) for r in rows] == predicted.tolist()

    panels = sorted(os.listdir(tmp_path / "panels"))
    assert panels == ["0000_good_000.png", "0001_good_001.png", "0002_good_002.png"]
    for name in panels + ["../roc.png", "../pro.png", "../score_histogram.png"]:
        with Image.open(tmp_path / "panels" / name) as im:
            im.load()
            assert im.mode == "RGB" and im.size[0] > 100
    assert set(written) == {"scores.csv", "metrics.json", "roc.png", "pro.png", "score_histogram.png"} | {
        f"panels/{p}" for p in panels}
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    assert writer.flushed and writer.scalars["eval/image_auroc"] == results["scalars"]["image_auroc"]
    assert set(writer.images) == {"panels/0000_good_000", "panels/0001_good_001", "curves/roc",
                                  "curves/pro", "curves/score_histogram"}
    assert all(a.ndim == 4 and a.shape[0] == 1 and a.shape[-1] == 3 and a.dtype == np.uint8
               for a in writer.images.values())


def test_write_evaluation_without_masks_or_threshold(tmp_path):
    records, scores, _, images, recons, maps, _, _ = _case(1)
    results = metrics.evaluate_anomaly_detection(test_scores=scores, test_labels=[r.label for r in records])
    written = report.write_evaluation(
        tmp_path, report.Evaluation(metrics=results, records=records, image_scores=scores,
                                    predicted_labels=np.full(len(records), -1), images=images[3:5],
                                    reconstructions=recons[3:5], anomaly_maps=maps, panel_indices=[3, 4]))
    assert "pro.png" not in written and not (tmp_path / "pro.png").exists()
    assert sorted(os.listdir(tmp_path / "panels")) == ["0003_crack_000.png", "0004_crack_001.png"]
    with open(tmp_path / "scores.csv", newline="") as f:
        assert {r["predicted_label"] for r in csv.DictReader(f)} == {""}
    assert _strict_json((tmp_path / "metrics.json").read_text())["thresholds"] == {}


def test_failure_while_writing_metrics_keeps_previous_file(tmp_path, monkeypatch):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell which file is being synced")
    records, scores, predicted, _, _, maps, masks, results = _case()
    kwargs = dict(records=records, image_scores=scores, predicted_labels=predicted,
                  anomaly_maps=maps, masks=masks)
    report.write_evaluation(tmp_path, report.Evaluation(metrics=results, **kwargs))
    before = (tmp_path / "metrics.json").read_bytes()

    real_fsync = os.fsync

    def failing_fsync(fd):
        if "metrics.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError("simulated: disk full while writing metrics.json")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    changed = dict(results, scalars=dict(results["scalars"], image_auroc=0.123))
    with pytest.raises(OSError, match="simulated"):
        report.write_evaluation(tmp_path, report.Evaluation(metrics=changed, **kwargs))
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    monkeypatch.setattr(os, "fsync", real_fsync)
    scores_before = (tmp_path / "scores.csv").read_bytes()
    with pytest.raises(TypeError, match="metrics.bad"):
        report.write_evaluation(tmp_path, report.Evaluation(metrics=dict(results, bad=object()),
                                                            **dict(kwargs, image_scores=scores + 1)))
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert (tmp_path / "scores.csv").read_bytes() == scores_before  # nothing written


def test_select_panels_round_robin_over_defects():
    defects = ["good", "good", "good", "crack", "crack", "hole"]
    records = [Rec(f"{i}.png", int(d != "good"), d) for i, d in enumerate(defects)]
    assert report.select_panels(records, 4) == [0, 1, 3, 5]
    assert report.select_panels(records, 10) == list(range(6))


def test_panel_value_ranges_and_channels_render_identically():
    rng = np.random.default_rng(0)
    gray = rng.random((16, 16, 1)).astype(np.float32)
    amap = rng.random((16, 16)).astype(np.float32)
    mask = np.zeros((16, 16), np.float32)
    mask[4:9, 4:9] = 1
    unit = visualise.panel(gray, gray, amap, mask, threshold=0.7, title="x")
    signed = visualise.panel(gray * 2 - 1, gray * 2 - 1, amap, mask, threshold=0.7, title="x")
    rgb = visualise.panel(np.repeat(gray, 3, -1), np.repeat(gray, 3, -1), amap, mask, threshold=0.7, title="x")
    assert unit.dtype == np.uint8 and unit.ndim == 3 and unit.shape[-1] == 3
    np.testing.assert_array_equal(unit, signed)
    np.testing.assert_array_equal(unit, rgb)
    assert not np.array_equal(unit, visualise.panel(gray, gray, amap, None, threshold=0.7, title="x"))
    with pytest.raises(ValueError, match="anomaly_map must be"):
        visualise.panel(gray, gray, amap[:8], mask)


def test_image_grid_layout_and_value_ranges():
    from anomaly_core.evaluation import visualise

    images = np.zeros((5, 4, 3, 1), np.float32)
    images[2] = 1.0  # third tile white
    grid = visualise.image_grid(images * 2 - 1, (-1.0, 1.0), columns=2, gap=1)
    assert grid.shape == (3 * 5 - 1, 2 * 4 - 1, 3) and grid.dtype == np.uint8
    assert (grid[5:9, 0:3] == 255).all()  # row 1, column 0
    assert (grid[0:4, 0:3] == 0).all() and (grid[0:4, 4:7] == 0).all()
    assert (grid[4, :] == 255).all() and (grid[:, 3] == 255).all()  # gaps are white
    assert (grid[10:14, 4:7] == 255).all()  # the unused last cell stays white
    # the same pictures as RGB in [0, 1] give the same grid
    same = visualise.image_grid(np.repeat(images, 3, axis=-1), (0.0, 1.0), columns=2, gap=1)
    np.testing.assert_array_equal(grid, same)
    with pytest.raises(ValueError, match="image_grid"):
        visualise.image_grid(np.zeros((4, 4, 3)), (0.0, 1.0))


def test_output_names_from_input_names_are_bounded_and_distinct():
    from anomaly_core.evaluation.report import NAME_LIMIT, _safe_name, output_stem

    long_a, long_b = "a" * 240 + "1.png", "a" * 240 + "2.png"
    stem_a, stem_b = output_stem(3, f"/data/{long_a}"), output_stem(3, f"/data/{long_b}")
    assert stem_a != stem_b and len(stem_a) == len(stem_b) == 6 + NAME_LIMIT
    assert stem_a == output_stem(3, f"/data/{long_a}")  # deterministic
    assert output_stem(12, "/x/scratch 01.png") == "00012_scratch-01"
    assert _safe_name("crack/../../etc") == "crack-..-..-etc" and "/" not in _safe_name("a/b")
