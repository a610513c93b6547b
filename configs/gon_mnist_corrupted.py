"""Convolutional GON on corrupted MNIST (docs/METHODS.md 2.3, 3): train on 'identity', test on
the first 2,000 test images of each of the 15 corruptions (identity = normal).
28x28x1 in [0, 1], nz 100, ngf 64, Adam 1e-3, batch 128, 30 epochs of the training images.

  python launch.py --config=configs/gon_mnist_corrupted.py --workdir=runs/gon_mnist

tensorflow-datasets downloads and prepares mnist_corrupted on first use
(config.data.tfds_data_dir chooses where). Presets: `:cae` (the CAE baseline on the same
protocol), `:tiny` (tests).
"""
from configs.gon_base import base_config, shrink_gon

EPOCHS, TRAIN_IMAGES = 30, 60_000


def get_config(preset: str = ""):
    kind = "cae" if preset == "cae" else "conv_gon"
    config = base_config(kind, "mnist")
    config.data.source = "mnist_corrupted"
    config.train.batch_size = 128
    config.train.lr = 1e-3 if kind == "conv_gon" else 1e-4
    # 30 epochs over the training images that remain after the validation slice.
    config.train.steps = int(EPOCHS * TRAIN_IMAGES * (1 - config.data.val_fraction)) // config.train.batch_size
    config.eval.batch_size = 256
    config.eval.max_panels = 30
    if preset == "tiny":
        shrink_gon(config)
    elif preset not in ("", "cae"):
        raise ValueError(f"unknown preset {preset!r} for configs/gon_mnist_corrupted.py (known: cae, tiny)")
    return config
