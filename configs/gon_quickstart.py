"""Quick GON runs that need no download and finish on 2 CPU cores in a few minutes.

  python launch.py --config=configs/gon_quickstart.py:digits --workdir=runs/gon_digits
  python launch.py --config=configs/gon_quickstart.py:digits_cae --workdir=runs/cae_digits
  python launch.py --config=configs/gon_quickstart.py:texture --workdir=runs/gon_texture
  python launch.py --config=configs/gon_quickstart.py:texture_cae --workdir=runs/cae_texture

'digits': scikit-learn's bundled 8x8 digits upsampled to 28x28, digit 0 normal, the others
anomalous; the MNIST conv-GON architecture with ngf 16. 'texture': the built-in texture
demo at 64x64 with the MVTec conv-GON architecture at ngf 16. The reference's F(0) scoring
on the same run: add --mode=eval --config.eval.scoring=reference_zero_latent.
"""
from configs.gon_base import base_config


def get_config(preset: str = "digits"):
    dataset, _, cae = preset.partition("_")
    if dataset not in ("digits", "texture") or cae not in ("", "cae"):
        raise ValueError(f"unknown preset {preset!r} for configs/gon_quickstart.py "
                         "(known: digits, digits_cae, texture, texture_cae)")
    kind = "cae" if cae else "conv_gon"
    config = base_config(kind, "mnist" if dataset == "digits" else "mvtec")
    if dataset == "digits":
        config.data.source = "digits"
        config.train.batch_size = 32
        config.train.steps = 600
        config.train.lr = 1e-3
    else:
        config.data.source = "demo"
        config.data.root = ""
        config.train.batch_size = 16
        config.train.steps = 600
        config.train.lr = 5e-4
    if not cae:
        config.model.ngf = 16
    config.train.log_every = 50
    config.train.checkpoint_every = 200
    config.eval.max_panels = 12
    return config
