"""The GON and CAE networks' PyTorch names, and what the checkpoint converter needs of them.

The PyTorch side is gon_jax/torch_reference.py, whose attribute names follow the
reference notebooks and cwkx/GON. Each model kind has a `NameMap`, read off the structure of
its Flax variables; the layouts are anomaly_core/torch_import.py's. `TORCH_NETWORKS` is this
package's `Method.torch` (anomaly_core/convert_checkpoint.py): one network, 'gon', whose
model config.model.kind chooses; a run holds just it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anomaly_core import settings
from anomaly_core.torch_import import Layer, NameMap, TorchNetworks, numbered
from gon_jax import build


def _decoder_layers(t: str, f: tuple[str, ...], node: Mapping[str, Any]) -> list[Layer]:
    # Sequential of [ConvT, BN, act] * (n - 1) + [ConvT, out]: stage i starts at index 3i.
    layers = [Layer(f"{t}.{3 * i}", f + (name,), "conv_transpose")
              for i, name in numbered(node, "convt").items()]
    layers += [Layer(f"{t}.{3 * i + 1}", f + (name,), "batch_norm") for i, name in numbered(node, "bn").items()]
    return layers


def _conv_gon_layers(params: Mapping[str, Any]) -> list[Layer]:
    return _decoder_layers("network", (), params)


def _variational_gon_layers(params: Mapping[str, Any]) -> list[Layer]:
    return ([Layer("fc21", ("mu_head",), "dense"), Layer("fc22", ("logvar_head",), "dense")]
            + _decoder_layers("main", ("decoder",), params.get("decoder", {})))


def _implicit_gon_layers(params: Mapping[str, Any]) -> list[Layer]:
    return [Layer(f"{i}.linear", (name,), "dense") for i, name in sorted(numbered(params, "layer").items())]


def _cae_layers(params: Mapping[str, Any]) -> list[Layer]:
    del params
    return [Layer("encoder.0", ("conv0",), "conv"), Layer("encoder.3", ("conv1",), "conv"),
            Layer("decoder.0", ("convt0",), "conv_transpose"), Layer("decoder.2", ("convt1",), "conv_transpose")]


CONV_GON = NameMap("conv_gon", _conv_gon_layers)
IMPLICIT_GON = NameMap("implicit_gon", _implicit_gon_layers)
VARIATIONAL_GON = NameMap("variational_gon", _variational_gon_layers)
CAE = NameMap("cae", _cae_layers)
NAME_MAPS = {names.network: names for names in (CONV_GON, IMPLICIT_GON, VARIATIONAL_GON, CAE)}


def name_map(model_cfg: Any) -> NameMap:
    """The NameMap of config.model.kind."""
    settings.check(model_cfg, [build.KIND_RULE], at="config.model")
    return NAME_MAPS[model_cfg.kind]


def flax_module(config: Any, network: str) -> tuple[Any, tuple[int, ...]]:
    """(Flax module, input shape of batch 1) of the model config.model builds."""
    del network  # the method has one network, 'gon'
    return build.build_gon_model(config.model), tuple(build.model_input(config.model, 1).shape)


def torch_module(config: Any, network: str) -> Any:
    """The PyTorch mirror of the model (imports torch)."""
    del network
    from gon_jax.torch_reference import build_model

    return build_model(config.model)


TORCH_NETWORKS = TorchNetworks(
    title="GON",
    networks=("gon",),
    whole_run={"gon": "gon.pth"},
    flax_module=flax_module,
    name_map=lambda config, network: name_map(config.model),
    torch_module=torch_module,
    state_keys=lambda state, network: ("model",),
)
