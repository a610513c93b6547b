"""f-UNetGAN on MVTec AD 'bottle' at full size (128x128, width 64, the original's networks).

  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/bottle \
      --config.data.root=/path/to/mvtec_anomaly_detection

MVTec AD: https://www.mvtec.com/company/research/datasets/mvtec-ad (download and unpack,
then point config.data.root at the folder holding bottle/, carpet/, ...).
Presets: `configs/mvtec_bottle.py:tiny` (tests: 32x32, width 4, 2 steps per stage);
`configs/mvtec_bottle.py:reference` (the original's own choices: instance-norm critic, pixel
sums, relu(tanh) output, its encoder stage on D's logits; use it to reproduce the original
PyTorch code or to evaluate its files, docs/PARITY.md).
Training dynamics that carry over from the demo measurements (docs/TRAINING.md): the
critic without instance norm and the pixel-mean reduction (both scale-free in image size and
width) and the tanh output; the quickstart's encoder settings were measured only at 64x64, and
the moving average of G that `configs/quickstart.py:long` scores with stays off here
(unmeasured at full size; `--config.train.g_ema_decay=0.999` turns it on).
"""
from configs.funetgan_base import base_config, reference_dynamics, shrink


def get_config(preset: str = ""):
    config = base_config()
    config.data.source = "mvtec"
    config.data.root = "/path/to/mvtec_anomaly_detection"
    config.data.categories = ("bottle",)
    if preset == "tiny":
        shrink(config)
    elif preset == "reference":
        reference_dynamics(config)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/mvtec_bottle.py (known: tiny, reference)")
    return config
