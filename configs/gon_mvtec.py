"""Convolutional GON on MVTec AD (docs/METHODS.md 2.2): the reference notebook's network and
training (64x64x3 in [-1, 1], nz 100, ngf 124, Adam 1e-4, batch 64, 3001 steps, all 15
categories pooled) with the recipe measured on real photographs (docs/REAL_DATA.md):
augmentation by category kind ('auto') and the squared-error map smoothed with sigma 4 px.

  python launch.py --config=configs/gon_mvtec.py --workdir=runs/gon_mvtec \
      --config.data.root=/path/to/mvtec_anomaly_detection

Per category: --config.data.categories=bottle (or a comma list). The reference scored with
F(0); compare with --mode=eval --config.eval.scoring=reference_zero_latent.
Presets (known: cpu, tiny, reference):
  `:cpu`  the measured recipe at CPU size, one category (about 5 minutes on 2 cores):
      python launch.py --config=configs/gon_mvtec.py:cpu --workdir=runs/gon_transistor \
          --config.data.root=/data/mvtec --config.data.categories=transistor
  `:reference`  the notebook as it was (no augmentation, unsmoothed map);
  `:tiny`  tests.
At full size the network, the batch (64 vs 16), the learning rate (1e-4 vs 5e-4) and the step
count differ from `:cpu` (unmeasured there).
"""
from configs.gon_base import mvtec_config


def get_config(preset: str = ""):
    return mvtec_config("conv_gon", preset, "configs/gon_mvtec.py")
