"""A demo dataset that needs no download: bundled texture photographs + defects.

The 'product' is one of scikit-image's bundled texture photographs (brick, grass,
gravel; they ship inside the scikit-image wheel, nothing is fetched). Crops of it
are the normal images; defective test crops carry synthetic defects whose masks
are the exact set of changed pixels:
  foreign_patch  an irregular patch of another bundled texture,
  scratch        a thin polyline (rasterised without antialiasing),
  stain          an irregular colour blotch blended over the texture,
  hole           a dark rotated ellipse.
Training crops come from the upper part of the photograph and test crops from a
band below it, so test normals are unseen texture.

The dataset is written once, in the MVTec layout, to
<config.data.root>/demo_<texture>/ with a `demo_params.json` marker holding the
generation parameters (and a hash of the source textures). A folder whose marker
differs is rebuilt; the same parameters always give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator

import ml_collections
import numpy as np
from PIL import Image
from skimage import draw

from anomaly_core.data.records import DataError

DEMO_TEXTURES = ("brick", "grass", "gravel")
DEMO_DEFECTS = ("foreign_patch", "scratch", "stain", "hole")
MARKER = "demo_params.json"
GENERATOR_VERSION = 1
_STAIN_COLOURS = np.asarray(
    [(0.55, 0.27, 0.07), (0.20, 0.45, 0.15), (0.15, 0.25, 0.60), (0.60, 0.10, 0.10)], np.float32
)


def demo_category(texture: str) -> str:
    """Category folder name of the demo dataset built from `texture`."""
    return f"demo_{texture}"


def load_texture(name: str) -> np.ndarray:
    """A bundled scikit-image texture as (H, W, 3) float32 in [0, 1]."""
    if name not in DEMO_TEXTURES:
        raise DataError(
            f"config.data.demo_texture={name!r} is not one of the bundled textures {DEMO_TEXTURES}."
        )
    import skimage.data  # pylint: disable=g-import-not-at-top

    gray = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return np.repeat(gray[..., None], 3, axis=-1)


@dataclasses.dataclass(frozen=True)
class DemoParams:
    """Everything the generated files depend on."""

    texture: str = "brick"
    seed: int = 0
    crop_size: int = 128
    num_train: int = 120
    num_test_good: int = 20
    num_test_defect: int = 40

    @classmethod
    def from_config(cls, data_cfg: ml_collections.ConfigDict) -> DemoParams:
        return cls(
            texture=str(data_cfg.demo_texture),
            seed=int(data_cfg.demo_seed),
            crop_size=int(data_cfg.demo_crop_size),
            num_train=int(data_cfg.demo_num_train),
            num_test_good=int(data_cfg.demo_num_test_good),
            num_test_defect=int(data_cfg.demo_num_test_defect),
        )

    def marker(self) -> dict:
        """Marker contents: the parameters, generator version and texture hashes."""
        digest = hashlib.sha256()
        for name in DEMO_TEXTURES:
            digest.update(np.ascontiguousarray(load_texture(name)).tobytes())
        return dict(
            dataclasses.asdict(self),
            generator_version=GENERATOR_VERSION,
            textures_sha256=digest.hexdigest(),
        )


@dataclasses.dataclass
class DemoExample:
    """One generated image. `clean` is the crop before the defect was applied."""

    folder: str  # 'train/good', 'test/good' or 'test/<defect>'
    defect: str
    stem: str
    clean: np.ndarray  # (S, S, 3) uint8
    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) bool, all False for normal images


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _crop(
    texture: np.ndarray, rng: np.random.Generator, size: int, rows: tuple[int, int]
) -> np.ndarray:
    """A random size x size crop with its top row in [rows[0], rows[1]], maybe flipped."""
    top = int(rng.integers(rows[0], rows[1] + 1))
    left = int(rng.integers(0, texture.shape[1] - size + 1))
    crop = texture[top : top + size, left : left + size]
    return crop[:, ::-1] if rng.uniform() < 0.5 else crop


def _blob(rng: np.random.Generator, size: int, radius: tuple[float, float]) -> np.ndarray:
    """An irregular blob (radius modulated by three low harmonics), (size, size) bool."""
    r = rng.uniform(*radius) * size
    centre = rng.uniform(1.5 * r + 1, size - 1.5 * r - 1, size=2)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = np.full_like(angles, r)
    for k in (1, 2, 3):
        radii += r * rng.uniform(0, 0.3 / k) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    rr, cc = draw.polygon(
        centre[0] + radii * np.sin(angles), centre[1] + radii * np.cos(angles), shape=(size, size)
    )
    mask = np.zeros((size, size), bool)
    mask[rr, cc] = True
    return mask


def _scratch(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 2-4 segment polyline, 1-3 px wide, (size, size) bool."""
    mask = np.zeros((size, size), bool)
    point = rng.uniform(0.2 * size, 0.8 * size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    half_width = rng.choice([0.5, 1.0, 1.5])
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.uniform(-0.6, 0.6)
        length = rng.uniform(0.15, 0.3) * size
        end = point + length * np.asarray([np.sin(angle), np.cos(angle)])
        rr, cc = draw.line(*np.round(point).astype(int), *np.round(end).astype(int))
        keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        mask[rr[keep], cc[keep]] = True
        normal = half_width * np.asarray([np.cos(angle), -np.sin(angle)])
        corners = np.stack([point + normal, end + normal, end - normal, point - normal])
        rr, cc = draw.polygon(corners[:, 0], corners[:, 1], shape=(size, size))
        mask[rr, cc] = True
        point = end
    return mask


def _hole(rng: np.random.Generator, size: int) -> np.ndarray:
    """A rotated ellipse, (size, size) bool."""
    radii = rng.uniform(0.06, 0.14, size=2) * size
    centre = rng.uniform(radii.max() + 1, size - radii.max() - 1, size=2)
    rr, cc = draw.ellipse(
        centre[0], centre[1], radii[0], radii[1], shape=(size, size), rotation=rng.uniform(0, np.pi)
    )
    mask = np.zeros((size, size), bool)
    mask[rr, cc] = True
    return mask


def make_defect(
    clean: np.ndarray, kind: str, rng: np.random.Generator, foreign: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Applies one defect to a (S, S, 3) float crop in [0, 1].

    Returns (image, mask): only pixels where mask is True differ from `clean`.
    `foreign` maps texture names to (H, W, 3) float textures for 'foreign_patch'.
    """
    size = clean.shape[0]
    if kind == "foreign_patch":
        mask = _blob(rng, size, (0.12, 0.22))
        name = sorted(foreign)[int(rng.integers(len(foreign)))]
        patch = _crop(foreign[name], rng, size, (0, foreign[name].shape[0] - size))
        defective = patch
    elif kind == "scratch":
        mask = _scratch(rng, size)
        # Light on dark texture, dark on light texture, so the scratch is visible.
        level = 0.08 if clean[mask].mean() > 0.5 else 0.92
        defective = level + rng.normal(0.0, 0.02, clean.shape).astype(np.float32)
    elif kind == "stain":
        mask = _blob(rng, size, (0.1, 0.2))
        colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
        defective = 0.4 * clean + 0.6 * colour
    elif kind == "hole":
        mask = _hole(rng, size)
        defective = 0.03 + 0.07 * clean
    else:
        raise ValueError(f"Unknown demo defect {kind!r}; one of {DEMO_DEFECTS}.")
    image = np.where(mask[..., None], defective, clean)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


def generate_demo_examples(params: DemoParams) -> Iterator[DemoExample]:
    """Every example of the demo dataset, deterministic in `params`."""
    texture = load_texture(params.texture)
    foreign = {n: load_texture(n) for n in DEMO_TEXTURES if n != params.texture}
    size = params.crop_size
    height = texture.shape[0]
    band = size + size // 4  # rows reserved for test crops
    if height - band < size:
        raise DataError(
            f"config.data.demo_crop_size={size} is too large for the {height}-pixel "
            f"{params.texture!r} texture (at most {int(height / 2.25)})."
        )
    train_rows, test_rows = (0, height - band - size), (height - band, height - size)
    rng = np.random.default_rng(params.seed)
    no_mask = np.zeros((size, size), bool)
    for i in range(params.num_train):
        crop = _to_uint8(_crop(texture, rng, size, train_rows))
        yield DemoExample("train/good", "good", f"{i:03d}", crop, crop, no_mask)
    for i in range(params.num_test_good):
        crop = _to_uint8(_crop(texture, rng, size, test_rows))
        yield DemoExample("test/good", "good", f"{i:03d}", crop, crop, no_mask)
    for i in range(params.num_test_defect):
        kind = DEMO_DEFECTS[i % len(DEMO_DEFECTS)]
        clean = _to_uint8(_crop(texture, rng, size, test_rows))
        image, mask = make_defect(clean.astype(np.float32) / 255.0, kind, rng, foreign)
        yield DemoExample(
            f"test/{kind}", kind, f"{i // len(DEMO_DEFECTS):03d}", clean, _to_uint8(image), mask
        )


def build_demo_dataset(folder: str, params: DemoParams) -> None:
    """Writes the dataset in the MVTec layout into a new `folder`."""
    for example in generate_demo_examples(params):
        out = os.path.join(folder, example.folder)
        os.makedirs(out, exist_ok=True)
        Image.fromarray(example.image).save(os.path.join(out, example.stem + ".png"))
        if example.defect != "good":
            gt = os.path.join(folder, "ground_truth", example.defect)
            os.makedirs(gt, exist_ok=True)
            Image.fromarray(example.mask.astype(np.uint8) * 255).save(
                os.path.join(gt, example.stem + "_mask.png")
            )


def _read_marker(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_demo_dataset(root: str, data_cfg: ml_collections.ConfigDict) -> str:
    """Builds <root>/demo_<texture> unless it exists with the same parameters.

    Returns the category folder. Safe against concurrent builders: each builds in
    its own temporary folder and renames it into place.
    """
    params = DemoParams.from_config(data_cfg)
    marker = params.marker()
    folder = os.path.join(root, demo_category(params.texture))
    if _read_marker(folder) == marker:
        return folder
    if os.path.exists(folder) and not os.path.isfile(os.path.join(folder, MARKER)):
        raise DataError(
            f"{folder} exists but was not written by the demo builder (no {MARKER}); "
            "set config.data.root to another folder."
        )
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".{demo_category(params.texture)}.{uuid.uuid4().hex}")
    try:
        build_demo_dataset(tmp, params)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(marker, f, indent=1, sort_keys=True)
        if os.path.exists(folder):  # stale: other parameters
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if _read_marker(folder) != marker:  # not a concurrent identical build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
