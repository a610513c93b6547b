"""The settings every GON / CAE config starts from (docs/METHODS.md 2)."""
from __future__ import annotations

import ml_collections

from anomaly_core.data.config import default_data_config
from configs import common
from gon_jax.build import default_gon_model_config
from gon_jax.variants import variant


def base_config(kind: str, preset: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "gon"  # the method package: 'funetgan' | 'gon'
    config.seed = 0  # seeds initialisation, data order and every step's randomness
    config.model = default_gon_model_config(kind, preset)

    config.data = default_data_config()
    config.data.image_size = config.model.image_size
    config.data.channels = config.model.channels
    config.data.augment = "none"  # the GON notebooks only resize (and normalise)
    # The range the model's output covers: tanh decoders on MVTec [-1, 1] (reference), sigmoid
    # outputs (CAE, VAE) and the MNIST decoders [0, 1].
    config.data.value_range = variant(config.model).value_range(config.model)

    config.train = ml_collections.ConfigDict(dict(
        batch_size=64,  # global training batch (a multiple of the device count)
        steps=3001,  # training steps (one stage)
        lr=1e-4,  # Adam learning rate
        betas=(0.9, 0.999),  # Adam betas (b1, b2)
        latent_scaling="batch_mean",  # 'batch_mean' (reference) | 'per_sample'
        log_every=50,  # steps between progress lines (and metric checks)
        checkpoint_every=500,  # steps between checkpoints (and validation passes)
    ))
    config.checkpoint = common.checkpoint_config()
    config.checkpoint.select_best = True  # keep the checkpoint with the lowest validation score
    config.eval = common.eval_config(
        scoring="gradient_latent",  # | 'reference_zero_latent' (the notebooks' F(0) scoring)
        bn_statistics="context",  # BatchNorm when encoding test images: 'context' | 'running' | 'batch'
        chunk_size=0,  # test images encoded in parallel in 'context' mode (0 = one at a time)
        threshold_rule="mean_std",  # GON reference: mean + 2 std of held-out normal errors
        # Gaussian smoothing of the per-pixel squared error in pixels (0 = off, the reference's
        # map); the baseline's map is smoothed alike. The image score is never smoothed.
        smoothing_sigma=0.0,
        image_score="mean_squared_error",  # the per-image mean squared error (the GON reference's; the only one)
    )
    config.distributed = common.distributed_config()
    return config


def shrink_gon(config: ml_collections.ConfigDict, *, steps: int = 2) -> ml_collections.ConfigDict:
    """A tiny version for tests: same code path, narrow decoder, few steps."""
    if "ngf" in config.model:
        config.model.ngf = 4
    if "hidden" in config.model:
        config.model.hidden = (16, 16)
    if "widths" in config.model:
        config.model.widths = (4, 8)
    if "nz" in config.model:
        config.model.nz = 8
    config.train.batch_size = 4
    config.train.steps = steps
    config.train.log_every = 1
    config.train.checkpoint_every = steps
    config.eval.batch_size = 8
    config.eval.max_panels = 2
    return config


def real_data_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """What makes a GON or CAE beat the no-learning baseline on real photographs (measured on
    an MVTec AD object category, docs/REAL_DATA.md): augmentation by category
    kind ('auto': none for aligned objects, crops for textures) and the squared-error map
    smoothed with sigma 4 px at 64x64 (the per-pixel error of a blurry reconstruction is
    noisy; the baseline is smoothed alike)."""
    config.data.augment = "auto"
    config.eval.smoothing_sigma = 4.0 * config.data.image_size / 64
    return config


def cpu_size(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The CPU preset of the MVTec GON / CAE configs (about 5 minutes on 2 cores, compilation
    included): one category, the real-data recipe, a narrower GON decoder (ngf 32), batch 16,
    1,500 steps at Adam 5e-4."""
    real_data_recipe(config)
    config.data.categories = ("bottle",)
    if "ngf" in config.model:
        config.model.ngf = 32
    config.train.batch_size = 16
    config.train.steps = 1500
    config.train.lr = 5e-4
    config.train.checkpoint_every = 500
    config.eval.max_panels = 12
    return config


def mvtec_config(kind: str, preset: str, name: str) -> ml_collections.ConfigDict:
    """An MVTec AD config of the GON or CAE (`kind`; file `name`), 15 categories pooled: the
    reference notebook's network and training with the recipe measured on real photographs,
    or its preset ('cpu', 'tiny', 'reference')."""
    config = base_config(kind, "mvtec")
    config.data.source = "mvtec"
    config.data.root = "/path/to/mvtec_anomaly_detection"
    config.data.categories = ("all",)
    if preset == "reference":
        return config
    real_data_recipe(config)
    if preset == "cpu":
        cpu_size(config)
    elif preset == "tiny":
        shrink_gon(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for {name} (known: cpu, tiny, reference)")
    return config

