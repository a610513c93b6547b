"""The GON and CAE networks' PyTorch names.

The PyTorch side is gon_jax/torch_reference.py, whose attribute names follow the
reference notebooks and cwkx/GON. Each model kind has a `NameMap` (its entry in
gon_jax/variants.py points to it), read off the structure of its Flax variables; the layouts
are anomaly_core/interop/torch_import.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anomaly_core.interop.torch_import import Layer, NameMap, numbered


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
