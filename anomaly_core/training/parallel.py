"""Data parallelism over every device: one mesh axis 'data', batch sharded, state replicated.

This is `jax.pmap`'s data-parallel semantics expressed with the current API: a jitted step
over a `Mesh` with `NamedSharding`s. Batch statistics (BatchNorm, means in the losses) are
computed over the global batch because the step sees one logical array.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(distributed_cfg: Any) -> None:
    """Calls `jax.distributed.initialize` when the config (or the environment) asks for it.

    `distributed_cfg` is `config.distributed` (configs/common.py): `initialize` (bool), and
    `coordinator_address`, `num_processes`, `process_id`, `cpu_collectives` (None: unset).
    On TPU pods and SLURM/GPU clusters `jax.distributed.initialize()` with no arguments
    discovers the cluster itself.
    """
    cfg = distributed_cfg
    if not (cfg.initialize or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return
    given = {"coordinator_address": cfg.coordinator_address, "num_processes": cfg.num_processes,
             "process_id": cfg.process_id}
    if cfg.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all (global) devices with axis name 'data'."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, *, stacked: bool = False) -> NamedSharding:
    """Batch axis split over 'data' (axis 0, or axis 1 for stacked (k, B, ...) batches)."""
    return NamedSharding(mesh, P(None, DATA_AXIS) if stacked else P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, setting: str) -> int:
    """Returns the per-process batch size; raises if the global batch does not divide."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch_size <= 0 or global_batch_size % n_dev:
        raise ValueError(
            f"{setting}={global_batch_size} must be a positive multiple of the number of "
            f"devices ({n_dev}) so every device gets the same share of the batch."
        )
    return global_batch_size // n_proc


def global_batch(
    local_batch: Mapping[str, np.ndarray], mesh: Mesh, *, stacked: bool = False
) -> dict[str, jax.Array]:
    """Builds global arrays (batch axis sharded) from this process's share of a batch."""
    sharding = batch_sharded(mesh, stacked=stacked)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host pytree on every device of the mesh (replicated)."""
    return jax.device_put(tree, replicated(mesh))


def fetch(tree: Any) -> Any:
    """Brings a (replicated or fully addressable) pytree back to host numpy arrays."""
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), tree)

