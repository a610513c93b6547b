"""Variational GON (docs/METHODS.md 2.5): mu/logvar heads on the gradient-origin latent, conv
decoder with sigmoid output, BCE + KL as inner and outer loss; nz 48, ngf 32, 32x32.
Trained on corrupted MNIST 'identity' resized to 32x32, scored like the conv GON.

  python launch.py --config=configs/gon_variational.py --workdir=runs/gon_vae

Presets: `:digits` (scikit-learn digits, no download), `:tiny` (tests).
"""
from configs.gon_base import base_config, shrink_gon


def get_config(preset: str = ""):
    config = base_config("variational_gon", "vae32")
    config.data.source = "mnist_corrupted"
    config.train.steps = 10_000
    if preset == "digits":
        config.data.source = "digits"
        config.train.steps = 1500
    elif preset == "tiny":
        shrink_gon(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/gon_variational.py (known: digits, tiny)")
    return config
