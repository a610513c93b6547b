"""Convolutional autoencoder baseline on MVTec AD (docs/METHODS.md 2.7): 64x64x3 in [0, 1]
(sigmoid output), MSE, Adam 1e-4, batch 64, all 15 categories pooled; trained properly (the
reference trained 30 steps, each on one freshly drawn batch), with the recipe measured on real
photographs (docs/REAL_DATA.md): augmentation by category kind ('auto') and the
squared-error map smoothed with sigma 4 px.

  python launch.py --config=configs/cae_mvtec.py --workdir=runs/cae_mvtec \
      --config.data.root=/path/to/mvtec_anomaly_detection

Presets (known: cpu, tiny, reference):
  `:cpu`  the recipe at CPU size, one category (a few minutes on 2 cores):
      python launch.py --config=configs/cae_mvtec.py:cpu --workdir=runs/cae_transistor \
          --config.data.root=/data/mvtec --config.data.categories=transistor
  `:reference`  no augmentation, unsmoothed map;  `:tiny`  tests.
"""
from configs.gon_base import mvtec_config


def get_config(preset: str = ""):
    return mvtec_config("cae", preset, "configs/cae_mvtec.py")
