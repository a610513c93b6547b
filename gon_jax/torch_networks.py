"""What the checkpoint converter needs of the GON package: `TORCH_NETWORKS`, its `Method.torch`
(anomaly_core/interop/convert_checkpoint.py). One network, 'gon', whose model config.model.kind
chooses (gon_jax/variants.py); a run holds just it."""
from __future__ import annotations

from typing import Any

from anomaly_core.interop.torch_import import TorchNetworks
from gon_jax import build
from gon_jax.variants import variant


def flax_module(config: Any, network: str) -> tuple[Any, tuple[int, ...]]:
    """(Flax module, input shape of batch 1) of the model config.model builds."""
    del network  # the method has one network, 'gon'
    return build.build_gon_model(config.model), tuple(build.model_input(config.model, 1).shape)


def torch_module(config: Any, network: str) -> Any:
    """The PyTorch mirror of the model (imports torch)."""
    del network
    from gon_jax import torch_reference

    return torch_reference.build_model(config.model)


TORCH_NETWORKS = TorchNetworks(
    title="GON",
    networks=("gon",),
    whole_run={"gon": "gon.pth"},
    flax_module=flax_module,
    name_map=lambda config, network: variant(config.model).torch_names,
    torch_module=torch_module,
    state_keys=lambda state, network: ("model",),
)
