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
    slice (`val_fraction`, `seed`) or `val_dir`; test: the whole test set.
    """
    validate_data_config(data_cfg)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}.")
    source = data_cfg.source
    if source == "mnist_corrupted":
        return mnist_corrupted.load_split(data_cfg, split)
    if source == "digits":
        return digits.load_split(data_cfg, split)
    if source == "mnist_c_local":
        return mnist_c_local.load_split(data_cfg, split)
    return _load_folder_split(data_cfg, split)


def _folders(data_cfg: ml_collections.ConfigDict) -> tuple[list[tuple[str, str]], bool]:
    """[(category, folder)] and whether masks are required."""
    if data_cfg.source == "demo":
        root = data_cfg.root or default_demo_root()
        folder = demo_textures.ensure_demo_dataset(root, data_cfg)
        return [(demo_textures.demo_category(data_cfg.demo_texture), folder)], True
    with_category = data_cfg.source == "mvtec"
    return (mvtec.dataset_dirs(data_cfg.root, data_cfg.categories, with_category), with_category)


def _load_folder_split(data_cfg: ml_collections.ConfigDict, split: str) -> Split:
    folders, require_masks = _folders(data_cfg)
    pooled = len(folders) > 1
    limits = dict(max_pixels=int(data_cfg.max_image_pixels), strict=bool(data_cfg.strict))

    def tag(records: list[Record]) -> list[Record]:
        if not pooled:
            return records
        return [dataclasses.replace(r, defect=f"{r.category}/{r.defect}") for r in records]

    if split == "val" and data_cfg.val_dir:
        val = mvtec.scan_val_dir(data_cfg.val_dir, **limits)
        return Split("val", val.records, val.has_masks, val.skipped)

    records, skipped, has_masks = [], [], True
    for category, folder in folders:
        if split == "test":
            test = mvtec.scan_test(folder, category, require_masks=require_masks, **limits)
            records += tag(test.records)
            skipped += test.skipped
            has_masks &= test.has_masks
            continue
        train, skip = mvtec.scan_train(
            folder, category, allow_flat=data_cfg.source == "folder", **limits
        )
        if not data_cfg.val_dir:
            members = mvtec.validation_members(
                len(train), float(data_cfg.val_fraction), int(data_cfg.seed), category
            )
            train = [r for r, m in zip(train, members) if m == (split == "val")]
        if split == "train":
            skipped += skip
        records += tag(train)
    if not records and split != "val":
        raise DataError(f"The {split} split of {[f for _, f in folders]} is empty.")
    return Split(split, records, has_masks, skipped)
