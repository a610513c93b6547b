"""The f-UNetGAN settings every f-UNetGAN config starts from.

Hyperparameters are not recoverable from the reference (its parameters file was never
committed): Adam 1e-4, betas (0.0, 0.9), n_critic 5, lambda_gp 10, lambda_mix 1, batch 16
follow WGAN-GP / f-AnoGAN practice.

Training dynamics: three of the reference's choices keep the GAN from learning (measured in
docs/TRAINING.md), so the training configs depart from them by default:
  config.model.d_norm = 'none'          (reference 'instance': a critic blind to brightness,
                                         contrast and colour, far from 1-Lipschitz at start)
  config.train.pixel_reduction = 'mean' (reference 'sum': the pixel head's loss and penalty
                                         scale with H * W)
  config.model.generator_output = 'tanh' with data in [-1, 1]
                                        (reference 'relu_tanh' with data in [0, 1]: every
                                         pixel below 0 is black and gets no gradient)
`reference_dynamics(config)` (preset ':reference' of the MVTec configs) restores all three.
"""
from __future__ import annotations

import ml_collections

from anomaly_core.data.config import default_data_config
from configs import common
from funetgan_jax.build import ORIGINAL_COMPUTE, default_model_config


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "funetgan"  # the method package: 'funetgan' | 'gon'
    config.seed = 0  # seeds initialisation, data order and every step's randomness

    config.data = default_data_config()
    config.data.image_size = 128
    config.data.channels = 3
    config.data.value_range = (-1.0, 1.0)  # the generator's 'tanh' output range
    config.data.augment = "auto"  # crops + flips for textures, none for aligned objects (data/augmentation.py)

    config.model = default_model_config()
    config.model.d_norm = "none"
    config.model.generator_output = "tanh"

    config.train = ml_collections.ConfigDict(dict(
        batch_size=16,  # global training batch (a multiple of the device count)
        generator_steps=10_000,  # stage 1 length in generator updates (each after n_critic D updates)
        encoder_steps=10_000,  # stage 2 length in encoder updates
        n_critic=5,  # discriminator updates per generator update
        lr_g=1e-4,  # Adam learning rate of the generator
        lr_d=1e-4,  # Adam learning rate of the discriminator
        lr_e=1e-4,  # learning rate of the encoder
        betas=(0.0, 0.9),  # Adam betas (b1, b2) of the three optimisers
        encoder_optimizer="adam",  # 'adam' | 'rmsprop' (f-AnoGAN used RMSProp 5e-5)
        lambda_gp=10.0,  # weight of the gradient penalties
        lambda_mix=1.0,  # weight of the per-pixel consistency loss
        consistency="mixup",  # 'mixup' (paper) | 'cutmix' (U-Net GAN) | 'none'
        interpolation="per_channel",  # GP interpolates: 'per_channel' (reference) | 'per_sample'
        # Decoder-head losses and penalty over the pixel logits: 'sum' (reference; scale grows
        # with H * W) | 'mean'.
        pixel_reduction="mean",
        kappa=1.0,  # weight of the discriminator terms in the encoder loss
        # What of D(x) and D(G(E(x))) the encoder loss and the score compare: 'logits' (the
        # original f-UNetGAN's encoder stage: D's global and per-pixel logits) | 'features'
        # (f-AnoGAN izi_f: D's last features of both heads). Measured on the quickstart with
        # kappa 1, neither detects better (docs/TRAINING.md), so the original's is the default.
        encoder_target="logits",
        latent_weight=0.0,  # weight of mean (E(G(z)) - z)^2 in the encoder loss (f-AnoGAN 'ziz'; 0 = off)
        detach_critic=False,  # True reproduces the reference's detached critic terms
        log_every=50,  # steps between progress lines (and metric checks)
        checkpoint_every=1000,  # steps between checkpoints (and validation passes)
        # Exponential moving average of G's weights for the encoder stage, scoring and samples
        # (ProGAN/BigGAN practice; not in the reference): 0 = off, else the decay, e.g. 0.999.
        g_ema_decay=0.0,
        image_every=500,  # sample / reconstruction grids (progress/ and TensorBoard); 0 = off
    ))
    config.checkpoint = common.checkpoint_config()
    config.eval = common.eval_config(
        kappa=1.0,  # weight of the discriminator terms in the anomaly map and the image score
        # Weight of the U-Net critic's per-pixel verdict in the anomaly map (0 = off, the
        # original's map): weight * (mean - D_dec(x)) / sd, standardised by running statistics
        # of training images and brought to the residual map's spread (docs/METHODS.md 1.7).
        critic_weight=0.0,
        # AnoGAN's latent search at test time, started from E(x) (not in the original): this
        # many Adam steps (0 = off, the original's G(E(x))) of rate refine_lr on ||G(z) - x||^2.
        refine_steps=0,
        refine_lr=0.05,  # Adam learning rate of that latent search
        smoothing_sigma=4.0,  # Gaussian smoothing of the anomaly map in pixels (0 = off)
        image_score="fanogan",  # 'fanogan' (docs/METHODS.md 1.7) | 'max_map' | 'mean_map'
    )
    config.distributed = common.distributed_config()
    return config


def reference_dynamics(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The original's own choices: instance norm in the critic, pixel sums in the pixel head's
    losses, relu(tanh) generator output with data in [0, 1], and its encoder stage (D's logits
    compared, on a detached reconstruction, so only the image term trains E)."""
    for settings in ORIGINAL_COMPUTE.values():
        config.model.update(settings)
    config.train.pixel_reduction = "sum"
    config.data.value_range = (0.0, 1.0)
    config.train.encoder_target = "logits"
    config.train.detach_critic = True
    config.data.augment = "crop"  # the original's RandomResizedCrop for every category
    return config


def shrink(config: ml_collections.ConfigDict, *, image_size: int = 32, width: int = 4,
           steps: int = 2) -> ml_collections.ConfigDict:
    """A tiny version of a config for tests: same code path, small widths, few steps."""
    config.data.image_size = config.model.image_size = image_size
    config.model.width = width
    config.model.z_dim = 8
    config.train.batch_size = 4
    config.train.n_critic = 2
    config.train.generator_steps = steps
    config.train.encoder_steps = steps
    config.train.log_every = 1
    config.train.checkpoint_every = steps
    config.eval.batch_size = 8
    config.eval.max_panels = 2
    config.eval.smoothing_sigma = 1.0
    config.eval.refine_steps = min(config.eval.refine_steps, 2)  # the code path, not the cost
    # No moving average of G: after 2 updates it is the initialisation (tests/test_funetgan_dynamics.py
    # tests it), and the converter's round trip compares G's own weights.
    config.train.g_ema_decay = 0.0
    return config


def real_data_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The encoder stage and scoring measured to work (the texture demo, docs/TRAINING.md
    section 3; a real MVTec AD object category, docs/REAL_DATA.md), independent of size."""
    config.data.augment = "auto"  # crops for textures, none for aligned objects
    # The encoder trains on the image residual plus f-AnoGAN's latent regression, without the
    # critic's terms, which swamped the image term (docs/TRAINING.md section 3).
    config.train.kappa = 0.0
    config.train.latent_weight = 1.0
    config.eval.kappa = 0.0
    # Scoring: z = E(x) refined by refine_steps Adam steps of rate refine_lr on ||G(z) - x||^2,
    # then the residual |x - G(z)| alone (critic_weight 0), smoothed with sigma 4 px at 64x64
    # (scaled with the image size), its mean the image score. 75 steps scored like 100 and 200
    # (within 0.02 image AUROC) at under half of 200's cost; each step is a G forward and
    # backward per image (docs/TRAINING.md section 3).
    config.eval.refine_steps = 75
    config.eval.refine_lr = 0.13
    config.eval.critic_weight = 0.0
    config.eval.image_score = "mean_map"
    config.eval.smoothing_sigma = 4.0 * config.data.image_size / 64
    return config


def cpu_size(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The f-UNetGAN recipe at CPU size (64x64, width 4): `real_data_recipe` with a narrow
    network and fast learning rates. The quickstart and the MVTec configs' ':cpu' presets
    start from it; stage lengths and the moving average of G are theirs to set (the encoder
    stage's 300 updates are shared)."""
    config.data.image_size = config.model.image_size = 64
    real_data_recipe(config)
    config.model.width = 4
    config.model.z_dim = 64
    # No CBAM in the critic (the original's default has it): faster on a CPU and no worse on
    # the demo (docs/TRAINING.md section 3).
    config.model.d_attention = "none"
    config.train.batch_size = 8
    config.train.n_critic = 2
    config.train.encoder_steps = 300
    # Adam 1e-3 (not the full-size 1e-4): at 2e-4 G collapsed to one pattern within 300
    # updates on the demo, and drew nothing yet after 200 on the real category (docs/REAL_DATA.md).
    config.train.lr_g = config.train.lr_d = 1e-3
    config.train.lr_e = 1e-3
    config.train.log_every = 50
    return config


def mvtec_cpu(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The MVTec configs' ':cpu' preset: `cpu_size` with 1,500 generator updates and a moving
    average of G (decay 0.995): on a real object category, G's samples only began to differ
    per latent after about 600 updates, and detection still rose from 800 to 1,200
    (docs/REAL_DATA.md). Under 20 minutes on 2 cores."""
    cpu_size(config)
    config.train.generator_steps = 1500
    config.train.g_ema_decay = 0.995
    config.train.checkpoint_every = 750
    config.train.image_every = 300
    config.eval.batch_size = 20
    config.eval.max_panels = 16
    return config


def mvtec_config(category: str, preset: str, name: str) -> ml_collections.ConfigDict:
    """An MVTec AD config of one category (configs/mvtec_<category>.py, file `name`): the
    full-size networks with the recipe measured on real photographs, or its preset ('cpu',
    'tiny', 'reference')."""
    config = base_config()
    config.data.source = "mvtec"
    config.data.root = "/path/to/mvtec_anomaly_detection"
    config.data.categories = (category,)
    if preset == "reference":
        return reference_dynamics(config)
    real_data_recipe(config)
    # The moving average of G that the CPU preset measured helping (docs/REAL_DATA.md); at
    # full size (10,000 updates) a slower decay.
    config.train.g_ema_decay = 0.999
    if preset == "cpu":
        mvtec_cpu(config)
    elif preset == "tiny":
        shrink(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for {name} (known: cpu, tiny, reference)")
    return config

