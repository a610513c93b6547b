"""Convolutional GON on MVTec AD, all 15 categories pooled as in the reference notebook
(docs/METHODS.md 2.2): 64x64x3 in [-1, 1], nz 100, ngf 124, Adam 1e-4, batch 64, 3001 steps.

  python launch.py --config=configs/gon_mvtec.py --workdir=runs/gon_mvtec \
      --config.data.root=/path/to/mvtec_anomaly_detection

Per category: --config.data.categories=bottle (or a comma list). The reference scored with
F(0); compare with --mode=eval --config.eval.scoring=reference_zero_latent.
Presets: `:tiny` (tests).
"""
from configs.gon_base import base_config, shrink_gon


def get_config(preset: str = ""):
    config = base_config("conv_gon", "mvtec")
    config.data.source = "mvtec"
    config.data.root = "/path/to/mvtec_anomaly_detection"
    config.data.categories = ("all",)
    if preset == "tiny":
        shrink_gon(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/gon_mvtec.py (known: tiny)")
    return config
