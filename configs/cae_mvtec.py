"""Convolutional autoencoder baseline on MVTec AD, 15 categories pooled (docs/METHODS.md 2.7):
64x64x3 in [0, 1] (sigmoid output), MSE, Adam 1e-4, batch 64; trained properly (the
reference fitted one repeated batch for 30 steps).

  python launch.py --config=configs/cae_mvtec.py --workdir=runs/cae_mvtec \
      --config.data.root=/path/to/mvtec_anomaly_detection
"""
from configs.gon_base import base_config, shrink_gon


def get_config(preset: str = ""):
    config = base_config("cae", "mvtec")
    config.data.source = "mvtec"
    config.data.root = "/path/to/mvtec_anomaly_detection"
    config.data.categories = ("all",)
    if preset == "tiny":
        shrink_gon(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/cae_mvtec.py (known: tiny)")
    return config
