"""`load_image_folder`: the user's own images for `predict` mode."""

from __future__ import annotations

import dataclasses
import logging
import os

import ml_collections

from anomaly_core.data import image_io
from anomaly_core.data.config import validate_data_config
from anomaly_core.data.pipeline import EvalBatches, eval_batches
from anomaly_core.data.records import UNKNOWN, DataError, Record, Split

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageFolder(Split):
    """A 'predict' Split that remembers its `config.data` for `batches()`."""

    data_cfg: ml_collections.ConfigDict | None = None

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.records]

    def batches(
        self, batch_size: int, *, process_index: int = 0, process_count: int = 1
    ) -> EvalBatches:
        """`eval_batches` over this folder (evaluation transform, padded)."""
        return eval_batches(
            self.data_cfg,
            self,
            batch_size=batch_size,
            process_index=process_index,
            process_count=process_count,
        )


def load_image_folder(path: str, data_cfg: ml_collections.ConfigDict) -> ImageFolder:
    """Every image under `path` (searched recursively) as a 'predict' Split.

    `path` may also be a single image file. Files are sorted by relative path;
    hidden files and folders are ignored, folder symlinks are not followed and
    file symlinks resolving outside `path` are skipped. Unreadable images and
    files without an image extension are skipped with a warning and listed in
    `Split.skipped` (with `config.data.strict` they raise). Labels are -1
    (unknown), masks absent. `result.batches(batch_size)` (or `eval_batches`)
    applies the evaluation transform.
    """
    validate_data_config(data_cfg)
    max_pixels, strict = int(data_cfg.max_image_pixels), bool(data_cfg.strict)
    if os.path.isfile(path):
        if bad_name := image_io.utf8_problem(path):
            raise image_io.ImageReadError(path, bad_name)
        image_io.check_image(path, max_pixels)  # one file: its error is the error
        return ImageFolder(
            "predict", [Record(path, UNKNOWN, "")], has_masks=False, data_cfg=data_cfg
        )
    if not os.path.isdir(path):
        raise DataError(f"Input {path!r} (--input) is neither an image file nor a folder.")
    real_root = os.path.realpath(path)
    candidates = []
    for folder, subdirs, files in os.walk(path):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        candidates += [os.path.join(folder, f) for f in files if not f.startswith(".")]
    records, skipped = [], []
    for file in sorted(candidates, key=lambda p: os.path.relpath(p, path)):
        if not image_io.resolves_inside(file, real_root):
            reason = f"symlink resolves to {os.path.realpath(file)}, outside {real_root}"
        elif not image_io.is_image_name(file):
            reason = f"not an image file (extension {os.path.splitext(file)[1]!r})"
        elif bad_name := image_io.utf8_problem(file):
            reason = bad_name
        else:
            try:
                image_io.check_image(file, max_pixels)
                records.append(Record(file, UNKNOWN, ""))
                continue
            except image_io.ImageReadError as e:
                if strict:
                    raise
                reason = e.reason
        log.warning("Skipping %s: %s", file, reason)
        skipped.append((file, reason))
    if not records:
        detail = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise DataError(
            f"No readable images in {path!r}"
            + (f" ({len(skipped)} skipped, e.g. {detail})" if skipped else " (the folder is empty)")
            + "."
        )
    return ImageFolder("predict", records, has_masks=False, skipped=skipped, data_cfg=data_cfg)
