"""Folder datasets in the MVTec AD layout (also the COVID-19 CT layout).

<dataset>/train/good/*.png                     normal training images
<dataset>/test/good/*.png                      normal test images (label 0)
<dataset>/test/<defect>/*.png                  anomalous test images (label 1)
<dataset>/ground_truth/<defect>/<stem>_mask.png

For 'mvtec', <dataset> = <root>/<category>; for 'folder' it is <root> itself.
'normal' is accepted wherever 'good' is (the COVID-19 CT folders use it), and
'folder' datasets may keep training images directly in train/. Class folders are
read non-recursively, files in sorted order. Hidden files are ignored; files with
other extensions, unreadable images and symlinks that resolve outside the
dataset folder are skipped and listed in `Split.skipped` with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from anomaly_core.data import image_io
from anomaly_core.data.records import ANOMALOUS, NORMAL, DataError, Record

log = logging.getLogger(__name__)

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
NORMAL_DIR_NAMES = ("good", "normal")
GROUND_TRUTH_DIR = "ground_truth"
MASK_SUFFIX = "_mask"

Skipped = list[tuple[str, str]]


@dataclasses.dataclass
class Labelled:
    """Records of a labelled folder (test/ or a validation folder)."""

    records: list[Record]
    skipped: Skipped
    has_masks: bool


def resolve_categories(categories: Sequence[str] | str) -> tuple[str, ...]:
    """`config.data.categories` as a tuple; ('all',) means the 15 MVTec categories."""
    if isinstance(categories, str):
        categories = (categories,)
    categories = tuple(categories)
    if categories == ("all",):
        return MVTEC_CATEGORIES
    if not categories:
        raise DataError(
            "config.data.categories is empty: name at least one "
            f'category, e.g. ("bottle",), or ("all",) for {MVTEC_URL}.'
        )
    return categories


def dataset_dirs(
    root: str, categories: Sequence[str] | str, with_category: bool
) -> list[tuple[str, str]]:
    """[(category, folder)] for 'mvtec' (one per category) or 'folder' (root)."""
    where = (
        f"Get MVTec AD from {MVTEC_URL} and set config.data.root to the "
        "folder holding its categories."
        if with_category
        else "Set config.data.root to a folder with train/, test/ and optionally ground_truth/."
    )
    if not root:
        raise DataError(f"config.data.root is not set. {where}")
    if not os.path.isdir(root):
        raise DataError(f"config.data.root={root!r} does not exist or is not a folder. {where}")
    if not with_category:
        return [("", root)]
    out = []
    for category in resolve_categories(categories):
        folder = os.path.join(root, category)
        if not os.path.isdir(folder):
            found = sorted(
                d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "train"))
            )
            raise DataError(
                f"Category {category!r} not found: {folder} does not exist "
                f"(config.data.categories={tuple(categories)!r}, config.data.root="
                f"{root!r}). Categories found there: {found or 'none'}. {where}"
            )
        out.append((category, folder))
    return out


def scan_files(
    folder: str, real_root: str, max_pixels: int, strict: bool
) -> tuple[list[str], Skipped]:
    """Readable image files directly in `folder` (sorted) and the skipped ones."""
    files, skipped = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or os.path.isdir(path):
            continue
        reason = None
        if not image_io.resolves_inside(path, real_root):
            reason = (
                f"symlink resolves to {os.path.realpath(path)}, outside the "
                f"dataset folder {real_root}"
            )
        elif not image_io.is_image_name(name):
            reason = f"not an image file (extension {os.path.splitext(name)[1]!r})"
        elif bad_name := image_io.utf8_problem(path):
            reason = bad_name
        else:
            try:
                image_io.check_image(path, max_pixels)
            except image_io.ImageReadError as e:
                if strict:
                    raise DataError(f"{e} (config.data.strict=True)") from e
                reason = e.reason
        if reason is None:
            files.append(path)
        else:
            log.warning("Skipping %s: %s", path, reason)
            skipped.append((path, reason))
    return files, skipped


def find_mask(gt_folder: str, stem: str) -> str | None:
    """<gt_folder>/<stem>_mask.<ext>, else <gt_folder>/<stem>.<ext>, else None."""
    for base in (stem + MASK_SUFFIX, stem):
        for ext in image_io.IMAGE_EXTENSIONS:
            for candidate in (base + ext, base + ext.upper()):
                path = os.path.join(gt_folder, candidate)
                if os.path.isfile(path):
                    return path
    return None


def _checked_mask(image_path: str, gt_folder: str, max_pixels: int, real_root: str) -> str:
    """The mask file of an anomalous image, decoded once to check it: it exists, resolves
    inside the dataset folder `real_root` (the symlink rule of images), decodes, and has
    its image's size. DataError naming the file otherwise."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    mask_path = find_mask(gt_folder, stem)
    if mask_path is None:
        raise DataError(
            f"Anomalous image {image_path} has no ground-truth mask: expected "
            f"{os.path.join(gt_folder, stem + MASK_SUFFIX + '.png')}."
        )
    if not image_io.resolves_inside(mask_path, real_root):
        raise DataError(
            f"Mask of {image_path} is unusable: {mask_path} is a symlink that resolves to "
            f"{os.path.realpath(mask_path)}, outside the dataset folder {real_root}."
        )
    try:
        mask_size = image_io.check_image(mask_path, max_pixels)
    except image_io.ImageReadError as e:
        raise DataError(f"Mask of {image_path} is unusable: {e}") from e
    image_size = image_io.check_image(image_path, max_pixels)
    if mask_size != image_size:
        raise DataError(
            f"Mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image "
            f"{image_path} is {image_size[0]}x{image_size[1]}."
        )
    return mask_path


def _subdirs(folder: str) -> list[str]:
    return sorted(
        d
        for d in os.listdir(folder)
        if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))
    )


def scan_train(
    folder: str, category: str, *, allow_flat: bool, max_pixels: int, strict: bool
) -> tuple[list[Record], Skipped]:
    """Normal training records of one dataset folder (train/good or train/normal)."""
    train = os.path.join(folder, "train")
    if not os.path.isdir(train):
        raise DataError(f"Training folder {train} not found (config.data.root).")
    real_root = os.path.realpath(folder)
    subdirs = _subdirs(train)
    classes = [d for d in subdirs if d in NORMAL_DIR_NAMES]
    for other in (d for d in subdirs if d not in NORMAL_DIR_NAMES):
        log.warning(
            "Ignoring %s: training uses normal images only (%s).",
            os.path.join(train, other),
            "/".join(NORMAL_DIR_NAMES),
        )
    dirs = [os.path.join(train, d) for d in classes]
    if allow_flat or not dirs:
        dirs.append(train)
    records, skipped = [], []
    for d in dirs:
        files, skip = scan_files(d, real_root, max_pixels, strict)
        if d == train and files and not allow_flat:
            skipped += [(p, "not in train/good") for p in files]
            files = []
        records += [Record(p, NORMAL, "good", None, category) for p in files]
        skipped += skip
    if not records:
        raise DataError(
            f"No readable training images in {train}/good "
            f"({len(skipped)} files skipped{_first_reasons(skipped)})."
        )
    return records, skipped


def scan_labelled(
    folder: str,
    gt_root: str,
    category: str,
    *,
    real_root: str,
    require_masks: bool,
    max_pixels: int,
    strict: bool,
) -> Labelled:
    """Records of class folders under `folder` ('good'/'normal' = 0, others = 1).

    Masks come from <gt_root>/<defect>/; when `gt_root` does not exist the result
    has no masks (an error if `require_masks`).
    """
    has_gt = os.path.isdir(gt_root)
    if require_masks and not has_gt:
        raise DataError(
            f"Ground-truth folder {gt_root} not found; MVTec AD ships one "
            f'({MVTEC_URL}). Use config.data.source="folder" for data without masks.'
        )
    records, skipped, subdirs = [], [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if os.path.isdir(path):
            subdirs.append(name)
        elif os.path.isfile(path):
            skipped.append((path, "not in a class folder"))
    has_anomalies = False
    for defect in subdirs:
        if defect == GROUND_TRUTH_DIR:
            continue
        files, skip = scan_files(os.path.join(folder, defect), real_root, max_pixels, strict)
        skipped += skip
        label = NORMAL if defect in NORMAL_DIR_NAMES else ANOMALOUS
        has_anomalies |= label == ANOMALOUS and bool(files)
        for p in files:
            mask = None
            if label == ANOMALOUS and has_gt:
                mask = _checked_mask(p, os.path.join(gt_root, defect), max_pixels, real_root)
            records.append(Record(p, label, defect, mask, category))
    if has_anomalies and not has_gt:
        log.warning("No %s: pixel metrics are unavailable for %s.", gt_root, folder)
    return Labelled(records, skipped, has_masks=has_gt or not has_anomalies)


def scan_test(
    folder: str, category: str, *, require_masks: bool, max_pixels: int, strict: bool
) -> Labelled:
    test = os.path.join(folder, "test")
    if not os.path.isdir(test):
        raise DataError(f"Test folder {test} not found (config.data.root).")
    return scan_labelled(
        test,
        os.path.join(folder, GROUND_TRUTH_DIR),
        category,
        real_root=os.path.realpath(folder),
        require_masks=require_masks,
        max_pixels=max_pixels,
        strict=strict,
    )


def scan_val_dir(val_dir: str, *, max_pixels: int, strict: bool) -> Labelled:
    """An explicit validation folder: flat normal images or class folders."""
    if not os.path.isdir(val_dir):
        raise DataError(f"config.data.val_dir={val_dir!r} does not exist or is not a folder.")
    real_root = os.path.realpath(val_dir)
    classes = [d for d in _subdirs(val_dir) if d != GROUND_TRUTH_DIR]
    if classes:
        result = scan_labelled(
            val_dir,
            os.path.join(val_dir, GROUND_TRUTH_DIR),
            "",
            real_root=real_root,
            require_masks=False,
            max_pixels=max_pixels,
            strict=strict,
        )
    else:
        files, skipped = scan_files(val_dir, real_root, max_pixels, strict)
        result = Labelled([Record(p, NORMAL, "good") for p in files], skipped, True)
    if not result.records:
        raise DataError(f"No readable images in config.data.val_dir={val_dir!r}.")
    return result


def validation_members(n: int, fraction: float, seed: int, key: str) -> np.ndarray:
    """(n,) bool, True for the seeded validation slice of n training images.

    round(n * fraction) images, at least one when fraction > 0 and n >= 2, and
    never all of them. `key` (e.g. the category) decorrelates pooled categories.
    """
    n_val = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode())])
    members = np.zeros(n, bool)
    members[rng.permutation(n)[:n_val]] = True
    return members


def _first_reasons(skipped: Iterable[tuple[str, str]], k: int = 3) -> str:
    skipped = list(skipped)[:k]
    if not skipped:
        return ""
    return "; e.g. " + "; ".join(f"{p}: {r}" for p, r in skipped)
