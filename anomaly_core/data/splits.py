"""`load_split`: the train / val / test examples of any configured source."""

from __future__ import annotations

import dataclasses

import ml_collections

from anomaly_core.data import demo_textures, digits, mnist_c_local, mnist_corrupted, mvtec
from anomaly_core.data.config import default_demo_root, validate_data_config
from anomaly_core.data.records import DataError, Record, Split

SPLITS = ("train", "val", "test")


def load_split(data_cfg: ml_collections.ConfigDict, split: str) -> Split:
    """The examples of `split` ('train' | 'val' | 'test') in a fixed order.

    train: normal training images minus the validation slice; val: that seeded
    slice (`val_fraction`, `seed`) or `val_dir`; test: the whole test set. A run that
    uses several splits holds one `Splits` instead, so each is scanned once.
    """
    return Splits(data_cfg)[split]


class Splits:
    """The train / val / test splits of one `config.data`, each resolved and scanned at most
    once, on first use (train and val come from one scan of the training folders). One
    object serves a whole run: preflight checks, training, validation and evaluation."""

    def __init__(self, data_cfg: ml_collections.ConfigDict):
        validate_data_config(data_cfg)
        self.data_cfg = data_cfg
        self._loaded: dict[str, Split] = {}

    def __getitem__(self, split: str) -> Split:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} must be one of {SPLITS}.")
        if split not in self._loaded:
            self._loaded.update(_load(self.data_cfg, split))
        return self._loaded[split]


def _load(data_cfg: ml_collections.ConfigDict, split: str) -> dict[str, Split]:
    """{name: Split} holding `split` (and any other split the same scan produced)."""
    source = data_cfg.source
    if source == "mnist_corrupted":
        return {split: mnist_corrupted.load_split(data_cfg, split)}
    if source == "digits":
        return {split: digits.load_split(data_cfg, split)}
    if source == "mnist_c_local":
        return {split: mnist_c_local.load_split(data_cfg, split)}
    return _load_folder_splits(data_cfg, split)


def _folders(data_cfg: ml_collections.ConfigDict) -> tuple[list[tuple[str, str]], bool]:
    """[(category, folder)] and whether masks are required."""
    if data_cfg.source == "demo":
        root = data_cfg.root or default_demo_root()
        folder = demo_textures.ensure_demo_dataset(root, data_cfg)
        return [(demo_textures.demo_category(data_cfg.demo_texture), folder)], True
    with_category = data_cfg.source == "mvtec"
    return (mvtec.dataset_dirs(data_cfg.root, data_cfg.categories, with_category), with_category)


def _load_folder_splits(data_cfg: ml_collections.ConfigDict, split: str) -> dict[str, Split]:
    folders, require_masks = _folders(data_cfg)
    pooled = len(folders) > 1
    limits = dict(max_pixels=int(data_cfg.max_image_pixels), strict=bool(data_cfg.strict))

    def tag(records: list[Record]) -> list[Record]:
        if not pooled:
            return records
        return [dataclasses.replace(r, defect=f"{r.category}/{r.defect}") for r in records]

    def checked(name: str, records: list[Record], has_masks: bool, skipped: list) -> Split:
        if not records and name != "val":
            raise DataError(f"The {name} split of {[f for _, f in folders]} is empty.")
        return Split(name, records, has_masks, skipped)

    if split == "val" and data_cfg.val_dir:
        val = mvtec.scan_val_dir(data_cfg.val_dir, **limits)
        return {"val": Split("val", val.records, val.has_masks, val.skipped)}

    if split == "test":
        records, skipped, has_masks = [], [], True
        for category, folder in folders:
            test = mvtec.scan_test(folder, category, require_masks=require_masks, **limits)
            records += tag(test.records)
            skipped += test.skipped
            has_masks &= test.has_masks
        return {"test": checked("test", records, has_masks, skipped)}

    train_records, val_records, skipped = [], [], []
    for category, folder in folders:
        train, skip = mvtec.scan_train(folder, category, allow_flat=data_cfg.source == "folder", **limits)
        skipped += skip
        if data_cfg.val_dir:
            train_records += tag(train)
            continue
        members = mvtec.validation_members(len(train), float(data_cfg.val_fraction), int(data_cfg.seed), category)
        train_records += tag([r for r, m in zip(train, members) if not m])
        val_records += tag([r for r, m in zip(train, members) if m])
    out = {} if data_cfg.val_dir else {"val": Split("val", val_records, True, [])}
    if train_records or split == "train":  # an empty train split is an error when it is used
        out["train"] = checked("train", train_records, True, skipped)
    return out
