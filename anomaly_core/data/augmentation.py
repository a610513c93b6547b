"""Which training augmentation an image gets: `config.data.augment`, resolved per category.

  'crop': RandomResizedCrop(config.data.crop_scale) then a horizontal flip (if
          config.data.hflip): shifts, zooms and mirrors. For textures, where a defect-free
          patch looks the same wherever it was cut and at slightly other scales.
  'flip': the horizontal flip alone (if config.data.hflip).
  'none': the resized image as it is.
  'auto': per category kind: 'crop' for textures (MVTec AD's carpet, grid, leather, tile,
          wood; the built-in demo's texture crops), 'none' for everything else. MVTec AD's
          objects are photographed centred and aligned: crops and zooms show the model the
          object at positions and scales the test images never have, which is what makes
          objects easy to model (measured on a real object category, docs/REAL_DATA.md), and
          a mirrored part can be a defect ('misplaced'). Folders of one's own images
          ('folder' source, other category names) count as aligned parts: set 'crop' for
          textures.
Runs saved before the setting took names hold True / False in their config.json:
`run_config.read` turns them into 'crop' / 'none' (`LEGACY`).
"""
from __future__ import annotations

from typing import Any

AUGMENTATIONS = ("auto", "crop", "flip", "none")
MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
DEMO_PREFIX = "demo_"  # the demo's category folders (demo_textures.demo_category)
LEGACY = {True: "crop", False: "none"}  # the on/off values of runs saved before the names


def is_texture(category: str) -> bool:
    """Whether images of `category` are textures (MVTec AD's five, or the demo's crops)."""
    return category in MVTEC_TEXTURES or category.startswith(DEMO_PREFIX)


def valid_setting(value: Any) -> bool:
    """Whether `value` is a `config.data.augment` value."""
    return isinstance(value, str) and value in AUGMENTATIONS


def resolve(setting: Any, category: str) -> str:
    """The augmentation ('crop' | 'flip' | 'none') an image of `category` gets under
    `config.data.augment` = setting ('auto' | 'crop' | 'flip' | 'none')."""
    if not valid_setting(setting):
        raise ValueError(f"config.data.augment={setting!r}: expected one of {', '.join(AUGMENTATIONS)}")
    if setting == "auto":
        return "crop" if is_texture(category) else "none"
    return setting
