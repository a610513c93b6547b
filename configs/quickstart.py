"""Quickstart: f-UNetGAN on the built-in texture demo (no download), small enough for a laptop CPU.

  python launch.py --config=configs/quickstart.py --workdir=runs/quickstart
  python launch.py --config=configs/quickstart.py:long --workdir=runs/quickstart_long

The demo dataset (real scikit-image texture photographs, normal crops for training, test
crops with pasted foreign texture, scratches, colour blotches and holes, exact masks) is
written once in the MVTec layout to ~/.cache/funetgan_gon_jax/demo. Same code path as
configs/mvtec_bottle.py, with a narrow network (width 4) at 64x64, where every defect of the
demo keeps a visible mask, and short stages (400 generator and 300 encoder updates);
':long' trains 750 and 750 and scores with a moving average of G's weights.

Departures from the MVTec configs, each measured on this data (docs/TRAINING.md): no CBAM in
the critic, n_critic 2 (a step fits the CPU budget), Adam 1e-3 and z_dim 64 (G learns the
bricks within 300 updates); the encoder trains on the image residual alone plus the
latent-regression term (kappa 0, latent_weight 1, lr 1e-3): with a critic without instance
norm the discriminator-feature terms are tens of times larger than the image term and drove
every input to one latent; the anomaly map is the image residual (eval.kappa 0) of a
reconstruction whose latent E(x) is refined by 75 Adam steps at test time, the image score
the map's mean.
"""
from configs.funetgan_base import base_config


def get_config(preset: str = ""):
    config = base_config()
    config.data.source = "demo"
    config.data.root = ""  # '' = the cache folder above
    config.data.image_size = config.model.image_size = 64
    # The augmentation keeps the shared default, RandomResizedCrop(scale 0.5-1) + flips: the
    # demo's test crops come from the bottom of the photograph, where the bricks are about
    # 1.18x wider than in the training rows (period of the horizontal autocorrelation 20 px
    # against 17), and only zoomed training crops show G and E bricks of that size. Without
    # it, seed 0 scored image AUROC 0.828, with it 0.908 (docs/TRAINING.md section 10).
    config.model.width = 4
    config.model.z_dim = 64
    # No CBAM in the critic (the original's default has it): measured on this quickstart from
    # an empty compile cache, 5 min 17 s and image AUROC 0.809 without it, 6 min 51 s and 0.750
    # with it (docs/TRAINING.md).
    config.model.d_attention = "none"
    config.train.batch_size = 8
    config.train.n_critic = 2
    # 400 generator updates: the time the steps compiled ahead and the step-by-step refinement
    # saved (233 -> 206 s on the 2-core CPU) bought 100 more. Seeds 0 / 1 / 2, image AUROC
    # 0.884 / 0.958 / 0.909 -> 0.925 / 0.935 / 0.946, pixel AUROC 0.959 / 0.966 / 0.963 ->
    # 0.973 / 0.971 / 0.969 (docs/TRAINING.md section 11).
    config.train.generator_steps = 400
    config.train.encoder_steps = 300
    # Adam 1e-3 (not 2e-4): at 300 generator updates G then draws grey brick walls that differ
    # per z instead of one tinted pattern (docs/TRAINING.md section 8).
    config.train.lr_g = config.train.lr_d = 1e-3
    config.train.lr_e = 1e-3
    config.train.kappa = 0.0
    config.train.latent_weight = 1.0
    config.train.log_every = 50
    config.train.checkpoint_every = 150
    config.train.image_every = 100
    config.eval.kappa = 0.0
    # Scoring: z = E(x) refined by 75 Adam steps (lr 0.13) on ||G(z) - x||^2 before the
    # residual is taken, smoothed with sigma 4 (the shared default), and the image score is
    # the mean of the map (its maximum is dominated by a few saturated pixels G draws at one
    # place on the border, docs/TRAINING.md section 10). The critic's per-pixel verdict
    # (eval.critic_weight) ranged from a good detector to a useless one over three seeds
    # (section 9). On the three seeds' checkpoints 75 steps scored within 0.01 of 100 and 200
    # steps, 50 steps did not (section 10); each step is a G forward and backward per image
    # (about 8 ms per 64x64 image on 2 CPU cores).
    config.eval.refine_steps = 75
    config.eval.refine_lr = 0.13
    config.eval.critic_weight = 0.0
    config.eval.image_score = "mean_map"
    # 20: the 60 test crops in 3 full batches and the 12 validation crops in one (32 padded
    # the validation batch with 20 copies, each refined like a real crop).
    config.eval.batch_size = 20
    config.eval.max_panels = 16
    if preset == "long":
        config.train.generator_steps = 750
        config.train.encoder_steps = 750
        # The encoder stage and the scoring use a moving average of G's weights. Any decay
        # above 0.988 acts the same within 750 updates: the average's warm-up rule
        # min(decay, (1 + n) / (10 + n)) binds: half the weight on the last 57 updates, 90% on
        # the last 171.
        # Seeds 0 / 1 / 2, image AUROC 0.926 / 0.964 / 0.960 -> 0.9475 / 0.961 / 0.960, pixel
        # AUROC 0.983 / 0.982 / 0.974 -> 0.987 / 0.984 / 0.976 (docs/TRAINING.md section 12).
        config.train.g_ema_decay = 0.995
        config.train.checkpoint_every = 375
        config.train.image_every = 250
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/quickstart.py (known: long)")
    return config
