"""The f-UNetGAN networks' PyTorch names, and what the checkpoint converter needs of them.

The PyTorch side is funetgan_jax/torch_reference.py, whose attribute names follow the
original f-UNetGAN repository, so the original's checkpoints load too. Each network's
`NameMap` is read off the structure of its Flax variables; the layouts and both
spectral-norm formats are anomaly_core/interop/torch_import.py's. `TORCH_NETWORKS` is this
package's `Method.torch` (anomaly_core/interop/convert_checkpoint.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from anomaly_core.interop.torch_import import (FORMATS, Layer, NameMap, TorchNetworks, abstract_variables,
                                               checkpoint_format, numbered, spectral_norm_of, with_spectral_norm)
from funetgan_jax import build
from funetgan_jax.layers import convert_spectral_state

# ----------------------------------------------------------------------------------------
# Name maps


def _cbam_layers(t: str, f: tuple[str, ...], node: Mapping[str, Any]) -> list[Layer]:
    layers = [
        Layer(f"{t}.ChannelGate.mlp.1", f + ("channel_gate", "mlp_hidden"), "dense"),
        Layer(f"{t}.ChannelGate.mlp.3", f + ("channel_gate", "mlp_out"), "dense"),
        Layer(f"{t}.SpatialGate.spatial.conv", f + ("spatial_gate", "conv"), "conv"),
    ]
    if "bn" in node.get("spatial_gate", {}):
        layers.append(Layer(f"{t}.SpatialGate.spatial.bn", f + ("spatial_gate", "bn"), "batch_norm"))
    return layers


def _residual_conv_layers(t: str, f: tuple[str, ...], node: Mapping[str, Any]) -> list[Layer]:
    layers = [Layer(f"{t}.{name}", f + (name,), "sn_conv") for name in ("conv1", "conv2", "conv_sc")
              if name in node]
    if "cbam" in node:
        layers += _cbam_layers(f"{t}.attention1", f + ("cbam",), node["cbam"])
    return layers


def _generator_layers(params: Mapping[str, Any]) -> list[Layer]:
    layers = [Layer("proj_z", ("proj_z",), "sn_dense"),
              Layer("proj_o.0", ("out_bn",), "batch_norm"),
              Layer("proj_o.1", ("out_conv",), "conv")]
    for i, name in sorted(numbered(params, "block").items()):
        t = f"g_blocks.{i - 1}.0"
        layers += [Layer(f"{t}.conv1", (name, "conv1"), "sn_conv"),
                   Layer(f"{t}.conv2", (name, "conv2"), "sn_conv"),
                   Layer(f"{t}.conv_mixin", (name, "conv_sc"), "sn_conv")]
    for i, name in sorted(numbered(params, "cbam").items()):
        layers += _cbam_layers(f"g_blocks.{i - 1}.1", (name,), params[name])
    return layers


def _discriminator_layers(params: Mapping[str, Any]) -> list[Layer]:
    enc, dec = numbered(params, "enc"), numbered(params, "dec")
    layers = [Layer("linear", ("linear",), "sn_dense"), Layer("output_layer", ("output_conv",), "conv")]
    for k, name in sorted(enc.items()):
        t = "input_layer" if k == 1 else f"residual_conv_{k - 1}"
        layers += _residual_conv_layers(t, (name,), params[name])
    for k, name in sorted(dec.items()):
        # dec{k} produces level k; the PyTorch up blocks count from the bottom.
        layers += _residual_conv_layers(f"up_residual_conv{len(enc) - k}", (name,), params[name])
    return layers


def _encoder_layers(params: Mapping[str, Any]) -> list[Layer]:
    blocks = numbered(params, "block")
    layers = [Layer("input_layer", ("input_conv",), "sn_conv"), Layer("linear", ("linear",), "sn_dense")]
    for k, name in sorted(blocks.items()):
        t = "output_layer" if k == len(blocks) else f"residual_conv_{k}"
        layers += _residual_conv_layers(t, (name,), params[name])
    return layers


def _cbam_width_hint(wrong: list[str]) -> str:
    """The original generator builds its third CBAM for `base_channels` channels although it
    follows a 4 * base_channels block: that network cannot run a forward, and a file saved
    from it has the narrow shapes."""
    layers = sorted({m.group(1) for line in wrong
                     for m in [re.match(r"(g_blocks\.\d+\.1)\.ChannelGate\.mlp\.[13]\.", line)] if m})
    if not layers:
        return ""
    return (f"\n  {', '.join(layers)} (CBAM after generator block(s) {', '.join(l.split('.')[1] for l in layers)}) "
            "has the width of another block: the original generator as committed builds its third CBAM "
            "for base_channels (CBAMBlock(1 * base_channels)) after a 4 * base_channels block, so it cannot "
            "run a forward. Fix the original to CBAMBlock(4 * base_channels), train, and save again; this "
            "port builds every CBAM for its block's output width.")


GENERATOR = NameMap("generator", _generator_layers, explain=_cbam_width_hint)
DISCRIMINATOR = NameMap("discriminator", _discriminator_layers)
ENCODER = NameMap("encoder", _encoder_layers)
NAME_MAPS = {names.network: names for names in (GENERATOR, DISCRIMINATOR, ENCODER)}

# ----------------------------------------------------------------------------------------
# The converter's view of the method


_BUILDERS = {"generator": build.build_generator, "discriminator": build.build_discriminator,
             "encoder": build.build_encoder}


def flax_module(config: Any, network: str) -> tuple[Any, tuple[int, ...]]:
    """(Flax module, input shape of batch 1) of `network` as config.model builds it."""
    module = _BUILDERS[network](config.model)
    return module, build.input_shape(module, config.model)


def torch_module(config: Any, network: str) -> Any:
    """The PyTorch mirror of `network` (imports torch)."""
    from funetgan_jax.torch_reference import build_network

    return build_network(network, config.model)


def state_keys(state: Mapping[str, Any], network: str) -> tuple[str, ...]:
    """The train-state entries of `network`; the generator's moving average first where the run keeps one."""
    if network == "generator":
        return ("g_ema", "g") if "g_ema" in state else ("g",)
    return {"discriminator": ("d",), "encoder": ("e",)}[network]


def before_import(config: Any, network: str, state_dict: Mapping[str, Any], source: str) -> Any:
    """config.model.spectral_norm set to the file's format, with notes on stderr."""
    found = checkpoint_format(state_dict)
    if found in ("biggan", "torch") and found != config.model.spectral_norm:
        print(f"note: {source} holds {FORMATS[found]}: using config.model.spectral_norm={found!r}", file=sys.stderr)
        config = with_spectral_norm(config, found)
    if found == "biggan":
        _note_original_compute(config, network, source)
    return config


def _note_original_compute(config: Any, network: str, source: str) -> None:
    """The settings in which the original computes differently (build.ORIGINAL_COMPUTE)."""
    differ = {k: (config.model[k], v) for k, v in build.ORIGINAL_COMPUTE.get(network, {}).items()
              if config.model[k] != v}
    if differ:
        print(f"note: {source} has the original f-UNetGAN's format; the original's {network} computes with "
              + ", ".join(f"config.model.{k}={v!r}" for k, (_, v) in differ.items())
              + ", this config has " + ", ".join(f"{c!r}" for c, _ in differ.values())
              + " (no weights depend on it, so the file loads either way); to reproduce the original's "
              "outputs use configs/mvtec_bottle.py:reference", file=sys.stderr)


def before_export(config: Any, network: str, variables: Mapping[str, Any],
                  spectral_norm: str | None) -> tuple[Any, Mapping[str, Any]]:
    """(config, variables) in the spectral-norm format asked for (None: the saved one); the
    spectral-norm state re-expressed when it differs (layers.convert_spectral_state)."""
    saved = spectral_norm_of(variables)
    mode = spectral_norm or saved
    target = with_spectral_norm(config, mode)
    if mode is not None and mode != saved:
        variables = convert_spectral_state(variables, abstract_variables(*flax_module(target, network)))
    return target, variables


TORCH_NETWORKS = TorchNetworks(
    title="f-UNetGAN",
    networks=tuple(NAME_MAPS),
    whole_run={"generator": "G.pth", "discriminator": "D.pth", "encoder": "E.pth"},
    flax_module=flax_module,
    name_map=lambda config, network: NAME_MAPS[network],
    torch_module=torch_module,
    state_keys=state_keys,
    before_import=before_import,
    before_export=before_export,
)
