"""f-UNetGAN on MVTec AD 'carpet' at full size (REFERENCE.md 1, EVALUATION.md).

  python launch.py --config=configs/mvtec_carpet.py --workdir=runs/carpet \
      --config.data.root=/path/to/mvtec_anomaly_detection

MVTec AD: https://www.mvtec.com/company/research/datasets/mvtec-ad (download and unpack,
then point config.data.root at the folder holding bottle/, carpet/, ...).
Presets: `configs/mvtec_carpet.py:tiny` (tests: 32x32, width 4, 2 steps per stage).
"""
from configs.funetgan_base import base_config, shrink


def get_config(preset: str = ""):
    config = base_config()
    config.data.source = "mvtec"
    config.data.root = "/path/to/mvtec_anomaly_detection"
    config.data.categories = ("carpet",)
    if preset == "tiny":
        shrink(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/mvtec_carpet.py (known: tiny)")
    return config
