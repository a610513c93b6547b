"""Blocks every config shares: checkpointing, evaluation and multi-host settings."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def checkpoint_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        keep=3,  # latest checkpoints kept (plus the best by the validation metric)
        async_save=True,  # write checkpoints in the background while training goes on
    ))


def eval_config(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        batch_size=32,  # global batch of the scoring passes (a multiple of the device count)
        max_panels=24,  # per-image PNG panels written for the test split
        threshold_rule="auto",  # docs/METHODS.md 4: F1-optimal on val if it has anomalies, else mean + 2 std
        aupro_fpr_limit=0.3,  # AUPRO integrates the PRO curve up to this false-positive rate
        baseline=True,  # also score the test split with |x - mean training image| (no learning)
        predict_heatmaps=-1,  # --mode=predict: heatmap PNGs for every image (-1) or the first N (0: none)
        # The checkpoint evaluated and used by predict: 'best' (lowest validation metric where
        # checkpoints record one, else the newest), 'latest', or a step number as text ('600').
        checkpoint="best",
    ))
    cfg.update(overrides)
    return cfg


def distributed_config() -> ml_collections.ConfigDict:
    """Multi-host: set initialize=True (or JAX_COORDINATOR_ADDRESS) to call jax.distributed.initialize()."""
    return ml_collections.ConfigDict(dict(
        initialize=False,  # call jax.distributed.initialize() (multi-host runs; SLURM/TPU detect the rest)
        coordinator_address=config_dict.placeholder(str),  # 'host:port' of process 0 (explicit clusters)
        num_processes=config_dict.placeholder(int),  # number of processes (explicit clusters)
        process_id=config_dict.placeholder(int),  # this process's index (explicit clusters)
        cpu_collectives=config_dict.placeholder(str),  # 'gloo' for multi-process CPU runs
    ))
