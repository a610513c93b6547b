"""Quickstart: f-UNetGAN on the built-in texture demo (no download), small enough for a laptop CPU.

  python launch.py --config=configs/quickstart.py --workdir=runs/quickstart

The demo dataset (real scikit-image texture photographs, normal crops for training, test
crops with pasted foreign texture, scratches, colour blotches and holes, exact masks) is
written once in the MVTec layout to ~/.cache/funetgan_gon_jax/demo. Same code path as
configs/mvtec_bottle.py, with a narrow network at 32x32 and short stages.
"""
from configs.funetgan_base import base_config


def get_config(preset: str = ""):
    config = base_config()
    config.data.source = "demo"
    config.data.root = ""  # '' = the cache folder above
    config.data.image_size = config.model.image_size = 32
    config.model.width = 4
    config.model.z_dim = 32
    config.train.batch_size = 8
    # n_critic 2 (MVTec configs: 5, the reference practice) keeps a step within the CPU budget.
    config.train.n_critic = 2
    config.train.generator_steps = 120
    config.train.encoder_steps = 300
    config.train.lr_g = config.train.lr_d = 2e-4
    config.train.lr_e = 5e-4
    config.train.log_every = 20
    config.train.checkpoint_every = 60
    config.eval.smoothing_sigma = 1.0
    config.eval.max_panels = 16
    if preset:
        raise ValueError(f"unknown preset {preset!r} for configs/quickstart.py")
    return config
