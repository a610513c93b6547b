"""Use a trained run from Python: load a workdir, score images.

    from anomaly_core.serving import api

    detector = api.load("runs/quickstart")            # its own config.json, checkpoint 'best'
    result = detector.score("path/to/images")          # a folder, a file, a list of files,
    result = detector.score(images)                    # or an (N, H, W, C) / (H, W, C) array
    result.scores, result.anomalous, result.normalised, result.anomaly_maps

Images are decoded and transformed exactly as evaluation does (resized to the model's
square input, converted to its channels and value range); arrays are uint8 (0..255) or
float in [0, 1]. `anomalous` and `normalised` need the image threshold the run's evaluation
fitted on validation data (`<workdir>/eval/metrics.json`); `normalised = score / threshold`
(above 1: anomalous). `--mode=predict` scores through the same object.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from anomaly_core import data as data_lib
from anomaly_core.data.records import UNKNOWN, Record, Split
from anomaly_core.evaluation import evaluation
from anomaly_core.program import methods, program, run_config
from anomaly_core.training import parallel


@dataclasses.dataclass
class Scores:
    """Scores of N images, in input order."""

    paths: list[str]  # file paths, or 'array[i]' for array inputs
    scores: np.ndarray  # (N,) the method's image score (higher: more anomalous)
    anomaly_maps: np.ndarray  # (N, S, S) per-pixel anomaly, S = config.data.image_size
    reconstructions: np.ndarray  # (N, S, S, C) in the data's value range
    threshold: float | None  # the run's fitted image threshold, None when not evaluated
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files

    @property
    def anomalous(self) -> np.ndarray | None:
        """(N,) bool: score above the fitted threshold (None without one)."""
        return None if self.threshold is None else self.scores > self.threshold

    @property
    def normalised(self) -> np.ndarray | None:
        """(N,) score / threshold: 1 at the threshold, above 1 anomalous (None without one)."""
        return None if not self.threshold else self.scores / self.threshold


class Detector:
    """A trained run, ready to score images (see the module docstring)."""

    def __init__(self, workdir: str, *, config=None, checkpoint: str | None = None):
        config = run_config.for_inference(workdir, config)
        if config is None:
            raise FileNotFoundError(f"{run_config.path(workdir)} not found: pass the run's config (config=...)")
        if checkpoint is not None:
            config = config.copy_and_resolve_references()
            with config.unlocked():
                config.eval.checkpoint = str(checkpoint)
        self.workdir, self.config = workdir, config
        self.method = methods.for_config(config)
        self.mesh = parallel.make_mesh()
        abstract = program.preflight(self.method, config, self.mesh)
        with jax.set_mesh(self.mesh):
            self.state, self.step, self.checkpoint = program.restore_for_inference(
                self.method, config, workdir, self.mesh, abstract=abstract)
        self._score = program.jit_score(self.method, config, self.mesh)
        saved = evaluation.saved_metrics(workdir) or {}
        thresholds = saved.get("thresholds") or {}
        self.threshold = (thresholds.get("image") or {}).get("value")
        self.pixel_threshold = (thresholds.get("pixel") or {}).get("value")

    def score_fn(self, batch):
        """The jitted score function on a global batch (what --mode=predict calls)."""
        return self._score(self.state, batch)

    def _split(self, images: Any) -> Split:
        if isinstance(images, (str, os.PathLike)):
            return data_lib.load_image_folder(os.fspath(images), self.config.data)
        if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, Sequence):
            arrays = np.asarray(images)
            if arrays.ndim == 3:
                arrays = arrays[None]
            if arrays.ndim != 4 or arrays.shape[-1] not in (1, 3):
                raise ValueError(f"images: expected (N, H, W, C) or (H, W, C) with C 1 or 3, got {arrays.shape}")
            if arrays.dtype != np.uint8:
                arrays = arrays.astype(np.float32)
                if not np.all(np.isfinite(arrays)) or arrays.min() < 0 or arrays.max() > 1:
                    raise ValueError("images: float arrays must hold finite values in [0, 1] (or pass uint8)")
            records = [Record(f"array[{i}]", UNKNOWN, "") for i in range(len(arrays))]
            return Split("predict", records, has_masks=False, arrays=arrays)
        paths = [os.fspath(p) for p in images]
        records, skipped = [], []
        for p in paths:
            try:
                folder = data_lib.load_image_folder(p, self.config.data)
            except (data_lib.DataError, OSError) as e:
                skipped.append((p, str(e)))
                continue
            records += folder.records
        return Split("predict", records, has_masks=False, skipped=skipped)

    def score(self, images: Any) -> Scores:
        """Scores a folder, a file, a list of files or an image array; see `Scores`."""
        split = self._split(images)
        n = len(split)
        if n == 0:
            return Scores([], np.zeros(0), np.zeros((0,) + (self.config.data.image_size,) * 2),
                          np.zeros((0,) + (self.config.data.image_size,) * 2 + (self.config.data.channels,)),
                          self.threshold, list(split.skipped))
        batches = data_lib.eval_batches(self.config.data, split, batch_size=int(self.config.eval.batch_size),
                                        process_index=jax.process_index(), process_count=jax.process_count())
        with jax.set_mesh(self.mesh):
            out = evaluation.score_batches(self.score_fn, batches, self.mesh, n=n, keep=range(n))
        unreadable = [(split.records[int(i)].path, "unreadable when scored") for i in out["missing"]]
        return Scores([split.records[int(i)].path for i in out["index"]], out["image_score"].astype(np.float64),
                      out["anomaly_map"].astype(np.float32), np.asarray(out["reconstructions"]),
                      self.threshold, list(split.skipped) + unreadable)


def load(workdir: str, *, checkpoint: str | None = None, config=None) -> Detector:
    """The run in `workdir` (its config.json; `checkpoint`: 'best' (default), 'latest' or a step)."""
    return Detector(workdir, config=config, checkpoint=checkpoint)
