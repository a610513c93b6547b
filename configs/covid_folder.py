"""f-UNetGAN on a generic folder dataset without a category level, e.g. the paper's
COVID-19 CT data: <root>/train/good/*.png, <root>/test/<class>/*.png (good = normal),
<root>/ground_truth/<class>/<stem>_mask.png.

  python launch.py --config=configs/covid_folder.py --workdir=runs/covid \
      --config.data.root=/path/to/covid_ct

CT slices are grayscale; they are replicated to 3 channels (config.data.channels = 3) so the
networks keep the reference's RGB shapes. Set channels=1 on both data and model for 1-channel.
Augmentation: 'auto' counts a folder dataset as aligned images and trains on them as they are
(anomaly_core/data/augmentation.py); --config.data.augment=crop gives the reference's
RandomResizedCrop + flips.
"""
from configs.funetgan_base import base_config, shrink


def get_config(preset: str = ""):
    config = base_config()
    config.data.source = "folder"
    config.data.root = "/path/to/covid_ct"
    if preset == "tiny":
        shrink(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/covid_folder.py (known: tiny)")
    return config
