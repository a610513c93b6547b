"""Records (one per example), splits (lists of records) and the data error type."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

NORMAL = 0
ANOMALOUS = 1
UNKNOWN = -1  # label of `predict` inputs


class DataError(ValueError):
    """A dataset or file the pipeline cannot use; the message names it."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One example.

    path: image file, or a stable identifier such as 'mnist_corrupted/fog/test/17'
      for in-memory sources (then `Split.arrays` holds the pixels).
    label: 0 normal, 1 anomalous, -1 unknown (predict mode).
    defect: defect type ('good' for normal images); '<category>/<defect>' when
      several MVTec categories are pooled.
    mask_path: ground-truth mask file, or None (all-zero mask).
    category: the MVTec category ('' for sources without one).
    """

    path: str
    label: int
    defect: str
    mask_path: str | None = None
    category: str = ""


@dataclasses.dataclass
class Split:
    """The examples of one split, in their fixed order.

    has_masks: False when the source has no pixel ground truth for anomalies
      (corrupted MNIST, digits, a folder without ground_truth/): masks are all
      zero and pixel metrics must be skipped.
    skipped: (path, reason) of every file left out, to be reported.
    arrays: pixels of in-memory sources, (N, h, w, c) uint8 or float32 in [0, 1],
      aligned with `records`; None for file sources.
    """

    name: str
    records: list[Record]
    has_masks: bool
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    arrays: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def defect_counts(self) -> dict[str, int]:
        """Number of examples per defect type, in first-seen order."""
        return dict(collections.Counter(r.defect for r in self.records))

    def labels(self) -> np.ndarray:
        """(N,) int32 labels."""
        return np.asarray([r.label for r in self.records], np.int32)
