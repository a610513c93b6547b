"""Convolutional autoencoder baseline on MVTec AD (docs/METHODS.md 2.7): 64x64x3 in [0, 1]
(sigmoid output), MSE, Adam 1e-4, batch 64, all 15 categories pooled; trained properly (the
reference fitted one repeated batch for 30 steps), with the recipe measured on real
photographs (docs/REAL_DATA.md): augmentation by category kind ('auto') and the
squared-error map smoothed with sigma 4 px.

  python launch.py --config=configs/cae_mvtec.py --workdir=runs/cae_mvtec \
      --config.data.root=/path/to/mvtec_anomaly_detection

Presets:
  `:cpu`  the recipe at CPU size, one category (a few minutes on 2 cores):
      python launch.py --config=configs/cae_mvtec.py:cpu --workdir=runs/cae_transistor \
          --config.data.root=/data/mvtec --config.data.categories=transistor
  `:reference`  no augmentation, unsmoothed map;  `:tiny`  tests.
"""
from configs.gon_base import base_config, cpu_size, real_data_recipe, shrink_gon


def get_config(preset: str = ""):
    config = base_config("cae", "mvtec")
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
        raise ValueError(f"unknown preset {preset!r} for configs/cae_mvtec.py (known: cpu, tiny, reference)")
    return config
