"""Implicit GON (SIREN over pixel coordinates, docs/METHODS.md 2.4) on corrupted MNIST:
nz 32, four 256-wide sine layers, w0 30, batch 64, Adam 1e-4.

  python launch.py --config=configs/gon_implicit.py --workdir=runs/gon_implicit

Presets: `:digits` (scikit-learn digits, no download, a few CPU minutes), `:tiny` (tests).
"""
from configs.gon_base import base_config, shrink_gon


def get_config(preset: str = ""):
    config = base_config("implicit_gon", "mnist")
    config.data.source = "mnist_corrupted"
    config.train.steps = 20_000
    if preset == "digits":
        config.data.source = "digits"
        config.train.steps = 1500
        config.train.lr = 1e-4
    elif preset == "tiny":
        shrink_gon(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/gon_implicit.py (known: digits, tiny)")
    return config
