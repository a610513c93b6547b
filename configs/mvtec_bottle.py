"""f-UNetGAN on MVTec AD 'bottle' at full size (128x128, width 64, the original's networks).

  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/bottle \
      --config.data.root=/path/to/mvtec_anomaly_detection

MVTec AD: https://www.mvtec.com/company/research/datasets/mvtec-ad (download and unpack,
then point config.data.root at the folder holding bottle/, carpet/, ...). Any category:
--config.data.categories=<category>.
Presets (known: cpu, tiny, reference):
  `:cpu`  the recipe measured on a real MVTec AD category at CPU size (64x64, width 4,
      1,500 + 300 updates, under 20 minutes on 2 cores; docs/REAL_DATA.md):
      python launch.py --config=configs/mvtec_bottle.py:cpu --workdir=runs/transistor \
          --config.data.root=/data/mvtec --config.data.categories=transistor
  `:reference`  the original's networks and training dynamics (instance-norm critic, pixel
      sums, relu(tanh) output, its encoder stage on D's logits, crops for every category);
      not its scoring, stage lengths or smoothing (docs/PARITY.md);
  `:tiny`  tests (32x32, width 4, 2 steps per stage).
The full-size default takes from the measurements what does not depend on size
(docs/REAL_DATA.md): augmentation by category kind, the encoder on the image residual and
the latent regression, the latent refined at test time, the map's mean as image score, sigma 4
px per 64 px, a moving average of G. Measured at 64x64 only: full size (128x128, width 64,
Adam 1e-4, n_critic 5, CBAM critic, 10,000 + 10,000 updates) is unmeasured (no GPU).
"""
from configs.funetgan_base import mvtec_config


def get_config(preset: str = ""):
    return mvtec_config("bottle", preset, "configs/mvtec_bottle.py")
