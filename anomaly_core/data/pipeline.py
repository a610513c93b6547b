"""Grain pipelines: the infinite training iterator and padded evaluation batches.

Every batch is a dict of numpy arrays:
  image (B, H, W, C) float32 in `value_range`; mask (B, H, W) float32 in {0, 1};
  label (B,) int32 (0 normal, 1 anomalous, -1 unknown); index (B,) int32 into
  the split's records; valid (B,) bool (False only for evaluation padding).
"""

from __future__ import annotations

import logging
import math
from typing import Iterator

import grain
import ml_collections
import numpy as np

from anomaly_core.data import augmentation, image_io, transforms
from anomaly_core.data.config import validate_data_config
from anomaly_core.data.records import DataError, Split
from anomaly_core.data.splits import load_split

Batch = dict[str, np.ndarray]

log = logging.getLogger(__name__)


class ExampleLoader:
    """Reads example i of a split at the pipeline resolution.

    `base(i)` gives the resized image (S, S, C) float32 in [0, 1] and its mask
    (S, S) in {0, 1}; calling the loader gives the evaluation example dict. With
    `cache`, resized images are kept as uint16 (steps of 1/65535) so later epochs
    skip decoding.
    """

    def __init__(self, split: Split, data_cfg: ml_collections.ConfigDict, *, cache: bool = False):
        self.split = split
        self.size = int(data_cfg.image_size)
        self.channels = int(data_cfg.channels)
        self.value_range = tuple(float(v) for v in data_cfg.value_range)
        self.max_pixels = int(data_cfg.max_image_pixels)
        self.strict = bool(data_cfg.strict)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        record = self.split.records[i]
        if self.split.arrays is not None:
            raw = self.split.arrays[i]
            image = (
                raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
            )
        else:
            image = image_io.decode_image(record.path, self.max_pixels)
        # Resize and channel conversion are both linear, so their order does not
        # matter; resizing first touches fewer planes when gray becomes RGB.
        if image.shape[-1] == 3 and self.channels == 1:
            image = transforms.to_channels(image, 1)
        resized = transforms.to_channels(transforms.resize_image(image, self.size), self.channels)
        return resized, self._mask(i, image.shape[:2])

    def _mask(self, i: int, image_hw: tuple[int, int]) -> np.ndarray:
        """Example i's mask (S, S) float32 in {0, 1}; its image is (H, W) = `image_hw`."""
        record = self.split.records[i]
        if record.mask_path is None:
            return np.zeros((self.size, self.size), np.float32)
        mask = image_io.decode_mask(record.mask_path, self.max_pixels)
        if mask.shape != tuple(image_hw):
            raise DataError(
                f"Mask {record.mask_path} is {mask.shape[1]}x{mask.shape[0]} "
                f"but its image {record.path} is {image_hw[1]}x"
                f"{image_hw[0]}."
            )
        return transforms.resize_mask(mask, self.size)

    def mask(self, i: int) -> np.ndarray:
        """Example i's mask (S, S) float32 in {0, 1} without decoding its image: the image's
        size is the listing's check (`image_io.check_image`, cached per path, size and mtime;
        DataError when the image is gone)."""
        if self.split.records[i].mask_path is None:
            return np.zeros((self.size, self.size), np.float32)
        if self.split.arrays is not None:
            return self._mask(i, self.split.arrays[i].shape[:2])
        w, h = image_io.check_image(self.split.records[i].path, self.max_pixels)
        return self._mask(i, (h, w))

    def base(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            return self._read(i)
        hit = self._cache.get(i)
        if hit is None:
            image, mask = self._read(i)
            hit = (np.round(image * 65535.0).astype(np.uint16), mask.astype(bool))
            self._cache[i] = hit
        # A miss returns the quantised values too, so a resumed run (cold cache)
        # sees bit-identical images.
        image, mask = hit
        return image.astype(np.float32) / 65535.0, mask.astype(np.float32)

    def example(
        self, i: int, image: np.ndarray, mask: np.ndarray, valid: bool = True
    ) -> dict[str, np.ndarray]:
        return {
            "image": transforms.to_value_range(image, self.value_range),
            "mask": mask.astype(np.float32),
            "label": np.int32(self.split.records[i].label),
            "index": np.int32(i),
            "valid": np.bool_(valid),
        }

    def __call__(self, item: tuple[int, bool]) -> dict[str, np.ndarray]:
        """Evaluation example of `item` (index, valid). A file that can no longer be read (it
        vanished or changed since the listing) gives a row with valid=False, named in a
        warning: the evaluation scores the others (`evaluation.score_batches` reports it
        missing) rather than failing after all training (config.data.strict: the error)."""
        i, valid = item
        try:
            image, mask = self.base(i)
        except DataError as e:
            if self.strict:
                raise
            if valid:  # padding rows repeat a record: named once
                log.warning("Skipping %s: %s (unreadable when scored, listed before)",
                            self.split.records[i].path, getattr(e, "reason", e))
            blank = np.zeros((self.size, self.size), np.float32)
            return self.example(i, np.zeros((self.size, self.size, self.channels), np.float32), blank, False)
        return self.example(i, image, mask, valid)


class _TrainExample(grain.transforms.RandomMap):
    """Index -> augmented training example; rng comes from Grain (seed, position)."""

    def __init__(self, loader: ExampleLoader, data_cfg: ml_collections.ConfigDict):
        self.loader = loader
        # Per record: pooled categories may be of both kinds (config.data.augment 'auto').
        self.kinds = [augmentation.resolve(data_cfg.augment, r.category) for r in loader.split.records]
        self.crop_scale = tuple(float(v) for v in data_cfg.crop_scale)
        self.hflip = bool(data_cfg.hflip)

    def random_map(self, element: int, rng: np.random.Generator):
        i = int(element)
        image, mask = self.loader.base(i)
        kind = self.kinds[i]
        if kind != "none":
            image, mask = transforms.augment(
                image, mask, rng, crop_scale=self.crop_scale if kind == "crop" else None, hflip=self.hflip
            )
        return self.loader.example(i, image, mask)


def _read_options(data_cfg: ml_collections.ConfigDict) -> grain.ReadOptions:
    threads = int(data_cfg.read_threads)
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * threads)


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} must be in [0, process_count={process_count})."
        )


def train_dataset(
    data_cfg: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    split: Split | None = None,
) -> grain.IterDataset:
    """The infinite training stream of this process as a Grain IterDataset.

    The global stream is one seeded shuffle per epoch (Grain reseeds each epoch)
    with augmentation randomness fixed by (seed, position in the stream). Global
    batch b is stream elements [b*G, (b+1)*G); process p takes every
    process_count-th of them starting at p, so the union of the processes' local
    batches is the same set whatever the process count.
    """
    validate_data_config(data_cfg)
    _check_process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive "
            f"multiple of process_count={process_count}."
        )
    if split is None:
        split = load_split(data_cfg, "train")
    if not len(split):
        raise DataError("The training split is empty.")
    shuffle_seed, augment_seed = (
        int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2)
    )
    loader = ExampleLoader(split, data_cfg, cache=bool(data_cfg.cache_images))
    ds = grain.MapDataset.range(len(split)).shuffle(seed=shuffle_seed).repeat()
    # The random map precedes the process slice so an example's augmentation
    # depends on its global position only.
    ds = ds.random_map(_TrainExample(loader, data_cfg), seed=augment_seed)
    ds = ds[process_index::process_count]
    it = ds.to_iter_dataset(_read_options(data_cfg)).batch(
        global_batch_size // process_count, drop_remainder=True
    )
    if int(data_cfg.num_workers) > 0:
        from absl import flags  # pylint: disable=g-import-not-at-top

        if not flags.FLAGS.is_parsed():
            # Grain's worker processes read absl flags; outside an absl app the
            # defaults are what we want.
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(data_cfg.num_workers)))
    return it


def train_iterator(
    data_cfg: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    split: Split | None = None,
) -> grain.DatasetIterator:
    """Infinite iterator of this process's training batches (see `train_dataset`).

    Each batch holds global_batch_size // process_count examples. `get_state()`
    returns a JSON-serialisable dict; `set_state()` on a fresh iterator built with
    the same arguments resumes the exact same sequence of batches. With
    `config.data.num_workers > 0` call `close()` when done to stop the workers.
    """
    return iter(
        train_dataset(
            data_cfg,
            global_batch_size=global_batch_size,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            split=split,
        )
    )


def eval_plan(
    n: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, valid) of this process's evaluation rows, padded.

    Process p scores records p, p + P, p + 2P, ...; every process gets the same
    number of rows, ceil(ceil(n / P) / batch_size) * batch_size, so collective
    steps line up. Padding rows repeat the process's first record (or record 0).
    """
    _check_process(process_index, process_count)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive.")
    share = np.arange(process_index, n, process_count)
    rows = math.ceil(math.ceil(n / process_count) / batch_size) * batch_size
    fill = share[0] if len(share) else 0
    indices = np.full(rows, fill, np.int64)
    indices[: len(share)] = share
    valid = np.arange(rows) < len(share)
    return indices, valid


class EvalBatches:
    """Iterator over padded evaluation batches; `len()` is the number of batches."""

    def __init__(
        self,
        split: Split,
        data_cfg: ml_collections.ConfigDict,
        *,
        batch_size: int,
        process_index: int,
        process_count: int,
    ):
        self.split = split
        indices, valid = eval_plan(len(split), batch_size, process_index, process_count)
        self._num_batches = len(indices) // batch_size
        items = list(zip(indices.tolist(), valid.tolist()))
        ds = grain.MapDataset.source(items).map(ExampleLoader(split, data_cfg))
        self._it = iter(
            ds.to_iter_dataset(_read_options(data_cfg)).batch(batch_size, drop_remainder=True)
        )

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> EvalBatches:
        return self

    def __next__(self) -> Batch:
        return next(self._it)


def eval_masks(data_cfg: ml_collections.ConfigDict, split: Split) -> Iterator[tuple[int, np.ndarray]]:
    """(index, mask (S, S) float32 in {0, 1}) of each example of `split` that has a mask file,
    in record order, at the evaluation batches' resolution; no image is decoded (the others'
    masks are all zero).

    An example whose image or mask can no longer be read is left out with a warning, as
    `eval_batches` leaves it out (config.data.strict: the error).
    """
    validate_data_config(data_cfg)
    loader = ExampleLoader(split, data_cfg)
    strict = bool(data_cfg.strict)

    def read(i: int) -> tuple[int, np.ndarray | None]:
        try:
            return i, loader.mask(i)
        except DataError as e:
            if strict:
                raise
            log.warning("Skipping %s: %s (unreadable, listed before)", split.records[i].path,
                        getattr(e, "reason", e))
            return i, None

    indices = [i for i, r in enumerate(split.records) if r.mask_path is not None]
    if not indices:
        return
    ds = grain.MapDataset.source(indices).map(read)
    for i, mask in ds.to_iter_dataset(_read_options(data_cfg)):
        if mask is not None:
            yield i, mask


def eval_batches(
    data_cfg: ml_collections.ConfigDict,
    split: str | Split,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> EvalBatches:
    """Deterministic batches scoring every example of `split` exactly once.

    `split` is 'train' | 'val' | 'test' or a loaded Split (e.g. from
    `load_image_folder`). No augmentation; rows with valid=False are padding.
    """
    validate_data_config(data_cfg)
    if isinstance(split, str):
        split = load_split(data_cfg, split)
    if not len(split):
        raise DataError(
            f"The {split.name!r} split is empty (for val: config.data.val_fraction="
            f"{data_cfg.val_fraction} or config.data.val_dir={data_cfg.val_dir!r})."
        )
    return EvalBatches(
        split,
        data_cfg,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
    )
