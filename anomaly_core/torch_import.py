"""PyTorch <-> Flax weight conversion for every network of the project.

The PyTorch side is the mirror in `funetgan_jax/torch_reference.py` and
`gon_jax/torch_reference.py` (whose attribute names follow the original repositories, so
their checkpoints load too). Each network family has an explicit name mapping, built from
the structure of a Flax variables template (`layer_map`): a list of `Layer`s pairing a
PyTorch module prefix with a Flax module path and a layer kind. Layouts:

  Conv2d.weight (O, I, kh, kw)          -> params kernel (kh, kw, I, O)
  ConvTranspose2d.weight (I, O, kh, kw) -> params kernel (kh, kw, O, I) (flax ConvTranspose
      with transpose_kernel=True and explicit padding k-1-p, gon_jax.decoders)
  Linear.weight (O, I)                  -> params kernel (I, O)
  *.bias                                -> params bias
  torch spectral_norm(...) (the Flax layer in spectral-norm mode 'torch'):
    .weight_orig                        -> params kernel as above
    .weight_u (O,)                      -> spectral u (O,)
    .weight_v (I*kh*kw,), flattened in (I, kh, kw) order
                                        -> spectral v, flattened in HWIO (kh, kw, I) order
  BigGAN-style SNConv2d / SNLinear of the original f-UNetGAN (mode 'biggan'):
    .weight                             -> params kernel as above
    .u0 (1, O)                          -> spectral u (O,)
    .sv0 (1,)                           -> spectral sigma (1,)
  BatchNorm2d weight, bias              -> params scale, bias
  BatchNorm2d running_mean, running_var -> batch_stats mean, var
  BatchNorm2d num_batches_tracked       -> dropped (export: the template's value, else 0)
Dense layers fed by a flatten (the generator's first layer, the encoder's last) need no
permutation: the JAX modules flatten and reshape in PyTorch's channel-major order.

Which spectral-norm format a layer has follows the Flax template (`spectral_norm_of`);
`checkpoint_format` tells which one a state_dict holds, and the error messages name both.

Accepted checkpoint forms: a state_dict; {'state_dict': state_dict} (what many training
scripts and Lightning save); keys prefixed 'module.' (nn.DataParallel /
DistributedDataParallel). Files are read with `torch.load(weights_only=True)`, so a pickle
that would run code is refused. torch is imported lazily: the package works without it.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

NETWORKS = ("generator", "discriminator", "encoder", "conv_gon", "implicit_gon", "variational_gon", "cae")
LAYER_KINDS = ("conv", "conv_transpose", "dense", "sn_conv", "sn_dense", "batch_norm")
_MAX_LISTED = 40  # keys listed per category in an error message


class TorchImportError(ValueError):
    """A checkpoint that cannot be read or does not fit the network it is loaded into."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of a network: PyTorch module prefix, Flax module path, layer kind."""

    torch: str
    flax: tuple[str, ...]
    kind: str


@dataclasses.dataclass(frozen=True)
class _Leaf:
    torch_key: str
    collection: str
    path: tuple[str, ...]
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------
# Layouts


def _oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    # Also ConvTranspose2d (I, O, kh, kw) -> (kh, kw, O, I): the same permutation.
    return np.transpose(w, (2, 3, 1, 0))


def _hwio_to_oihw(k: np.ndarray) -> np.ndarray:
    return np.transpose(k, (3, 2, 0, 1))


def _transpose2(w: np.ndarray) -> np.ndarray:
    return np.transpose(w)


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _row_to_vector(a: np.ndarray) -> np.ndarray:
    return np.reshape(a, (-1,))


def _vector_to_row(a: np.ndarray) -> np.ndarray:
    return np.reshape(a, (1, -1))


def _v_torch_to_flax(kernel_shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    kh, kw, cin = kernel_shape[0], kernel_shape[1], kernel_shape[2]
    return lambda v: np.reshape(np.transpose(np.reshape(v, (cin, kh, kw)), (1, 2, 0)), (-1,))


def _v_flax_to_torch(kernel_shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    kh, kw, cin = kernel_shape[0], kernel_shape[1], kernel_shape[2]
    return lambda v: np.reshape(np.transpose(np.reshape(v, (kh, kw, cin)), (2, 0, 1)), (-1,))


def _node(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(tree, Mapping) or name not in tree:
            return None
        tree = tree[name]
    return tree


FORMATS = {
    "biggan": "BigGAN-style spectral norm (u0/sv0)",
    "torch": "torch spectral_norm (weight_orig/weight_u/weight_v)",
    "plain": "plain weights (no spectral-norm state)",
}


def checkpoint_format(state_dict: Mapping[str, Any]) -> str:
    """'biggan' if any key ends in .u0 (the original f-UNetGAN; its encoder also holds torch
    spectral_norm layers), else 'torch' if any ends in .weight_orig, else 'plain' (FORMATS)."""
    keys = [str(k) for k in state_dict]
    if any(k.endswith(".u0") or k.endswith(".sv0") for k in keys):
        return "biggan"
    if any(k.endswith(".weight_orig") for k in keys):
        return "torch"
    return "plain"


def spectral_norm_of(variables: Mapping[str, Any]) -> str | None:
    """The spectral-norm mode of Flax variables: 'biggan' if any layer stores sigma, 'torch'
    if any stores v, None without spectral-norm state (GON networks)."""
    names = {path[-1] for path in _flat(variables.get("spectral", {}))} if isinstance(variables, Mapping) else set()
    if "sigma" in names:
        return "biggan"
    return "torch" if "v" in names else None


def _layer_leaves(layer: Layer, template: Mapping[str, Any]) -> list[_Leaf]:
    """The (torch key, flax leaf) pairs of one layer; which exist (bias, the spectral-norm
    format) follows the template."""
    params = _node(template.get("params", {}), layer.flax)
    if not isinstance(params, Mapping):
        raise TorchImportError(f"the Flax template has no parameters at {'/'.join(layer.flax)} "
                               f"(expected for PyTorch module {layer.torch!r})")
    t, f = layer.torch, layer.flax
    leaves: list[_Leaf] = []
    bias = [_Leaf(f"{t}.bias", "params", f + ("bias",), _identity, _identity)] if "bias" in params else []
    if layer.kind in ("conv", "conv_transpose"):
        leaves.append(_Leaf(f"{t}.weight", "params", f + ("kernel",), _oihw_to_hwio, _hwio_to_oihw))
    elif layer.kind == "dense":
        leaves.append(_Leaf(f"{t}.weight", "params", f + ("kernel",), _transpose2, _transpose2))
    elif layer.kind in ("sn_conv", "sn_dense") and "sigma" in (_node(template.get("spectral", {}), layer.flax) or {}):
        conv = layer.kind == "sn_conv"
        leaves += [
            _Leaf(f"{t}.weight", "params", f + ("kernel",),
                  _oihw_to_hwio if conv else _transpose2, _hwio_to_oihw if conv else _transpose2),
            _Leaf(f"{t}.u0", "spectral", f + ("u",), _row_to_vector, _vector_to_row),
            _Leaf(f"{t}.sv0", "spectral", f + ("sigma",), _identity, _identity),
        ]
    elif layer.kind in ("sn_conv", "sn_dense"):
        conv = layer.kind == "sn_conv"
        kshape = tuple(params["kernel"].shape)
        leaves += [
            _Leaf(f"{t}.weight_orig", "params", f + ("kernel",),
                  _oihw_to_hwio if conv else _transpose2, _hwio_to_oihw if conv else _transpose2),
            _Leaf(f"{t}.weight_u", "spectral", f + ("u",), _identity, _identity),
            _Leaf(f"{t}.weight_v", "spectral", f + ("v",),
                  _v_torch_to_flax(kshape) if conv else _identity,
                  _v_flax_to_torch(kshape) if conv else _identity),
        ]
    elif layer.kind == "batch_norm":
        return [
            _Leaf(f"{t}.weight", "params", f + ("scale",), _identity, _identity),
            _Leaf(f"{t}.bias", "params", f + ("bias",), _identity, _identity),
            _Leaf(f"{t}.running_mean", "batch_stats", f + ("mean",), _identity, _identity),
            _Leaf(f"{t}.running_var", "batch_stats", f + ("var",), _identity, _identity),
        ]
    else:
        raise ValueError(f"unknown layer kind {layer.kind!r}; one of {LAYER_KINDS}")
    return leaves + bias


# ----------------------------------------------------------------------------------------
# Name mappings, one per network family


def _numbered(names: Iterable[str], stem: str) -> dict[int, str]:
    found = {}
    for name in names:
        m = re.fullmatch(rf"{stem}(\d+)", name)
        if m:
            found[int(m.group(1))] = name
    return found


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
    for i, name in sorted(_numbered(params, "block").items()):
        t = f"g_blocks.{i - 1}.0"
        layers += [Layer(f"{t}.conv1", (name, "conv1"), "sn_conv"),
                   Layer(f"{t}.conv2", (name, "conv2"), "sn_conv"),
                   Layer(f"{t}.conv_mixin", (name, "conv_sc"), "sn_conv")]
    for i, name in sorted(_numbered(params, "cbam").items()):
        layers += _cbam_layers(f"g_blocks.{i - 1}.1", (name,), params[name])
    return layers


def _discriminator_layers(params: Mapping[str, Any]) -> list[Layer]:
    enc, dec = _numbered(params, "enc"), _numbered(params, "dec")
    layers = [Layer("linear", ("linear",), "sn_dense"), Layer("output_layer", ("output_conv",), "conv")]
    for k, name in sorted(enc.items()):
        t = "input_layer" if k == 1 else f"residual_conv_{k - 1}"
        layers += _residual_conv_layers(t, (name,), params[name])
    for k, name in sorted(dec.items()):
        # dec{k} produces level k; the PyTorch up blocks count from the bottom.
        layers += _residual_conv_layers(f"up_residual_conv{len(enc) - k}", (name,), params[name])
    return layers


def _encoder_layers(params: Mapping[str, Any]) -> list[Layer]:
    blocks = _numbered(params, "block")
    layers = [Layer("input_layer", ("input_conv",), "sn_conv"), Layer("linear", ("linear",), "sn_dense")]
    for k, name in sorted(blocks.items()):
        t = "output_layer" if k == len(blocks) else f"residual_conv_{k}"
        layers += _residual_conv_layers(t, (name,), params[name])
    return layers


def _decoder_layers(t: str, f: tuple[str, ...], node: Mapping[str, Any]) -> list[Layer]:
    # Sequential of [ConvT, BN, act] * (n - 1) + [ConvT, out]: stage i starts at index 3i.
    layers = [Layer(f"{t}.{3 * i}", f + (name,), "conv_transpose")
              for i, name in _numbered(node, "convt").items()]
    layers += [Layer(f"{t}.{3 * i + 1}", f + (name,), "batch_norm") for i, name in _numbered(node, "bn").items()]
    return layers


def _conv_gon_layers(params: Mapping[str, Any]) -> list[Layer]:
    return _decoder_layers("network", (), params)


def _variational_gon_layers(params: Mapping[str, Any]) -> list[Layer]:
    return ([Layer("fc21", ("mu_head",), "dense"), Layer("fc22", ("logvar_head",), "dense")]
            + _decoder_layers("main", ("decoder",), params.get("decoder", {})))


def _implicit_gon_layers(params: Mapping[str, Any]) -> list[Layer]:
    return [Layer(f"{i}.linear", (name,), "dense") for i, name in sorted(_numbered(params, "layer").items())]


def _cae_layers(params: Mapping[str, Any]) -> list[Layer]:
    del params
    return [Layer("encoder.0", ("conv0",), "conv"), Layer("encoder.3", ("conv1",), "conv"),
            Layer("decoder.0", ("convt0",), "conv_transpose"), Layer("decoder.2", ("convt1",), "conv_transpose")]


_MAPPINGS: dict[str, Callable[[Mapping[str, Any]], list[Layer]]] = {
    "generator": _generator_layers,
    "discriminator": _discriminator_layers,
    "encoder": _encoder_layers,
    "conv_gon": _conv_gon_layers,
    "implicit_gon": _implicit_gon_layers,
    "variational_gon": _variational_gon_layers,
    "cae": _cae_layers,
}


def network_of(variables: Mapping[str, Any]) -> str:
    """The network family of a Flax variables dict, recognised by its top-level modules."""
    params = variables.get("params") if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping):
        raise TorchImportError("expected a Flax variables dict with a 'params' collection, got "
                               f"{type(variables).__name__} with keys {list(variables)[:8] if isinstance(variables, Mapping) else '-'}")
    names = set(params)
    if "proj_z" in names:
        return "generator"
    if "output_conv" in names and "enc1" in names:
        return "discriminator"
    if "input_conv" in names:
        return "encoder"
    if "mu_head" in names:
        return "variational_gon"
    if "layer0" in names:
        return "implicit_gon"
    if "convt0" in names and "conv0" in names:
        return "cae"
    if "convt0" in names:
        return "conv_gon"
    raise TorchImportError(f"cannot tell which network the Flax variables belong to (top-level modules "
                           f"{sorted(names)}); pass network= one of {NETWORKS}")


def layer_map(variables: Mapping[str, Any], network: str | None = None) -> list[Layer]:
    """The explicit PyTorch <-> Flax layer mapping for `variables` (a template or real ones)."""
    network = network_of(variables) if network is None else network
    if network not in _MAPPINGS:
        raise TorchImportError(f"network must be one of {NETWORKS}, got {network!r}")
    return _MAPPINGS[network](variables["params"])


def _flat(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def _leaves_for(variables: Mapping[str, Any], network: str | None) -> tuple[str, list[_Leaf]]:
    """All leaves of the mapping, checked to cover every variable of `variables` exactly."""
    network = network_of(variables) if network is None else network
    leaves = [leaf for layer in layer_map(variables, network) for leaf in _layer_leaves(layer, variables)]
    mapped = {(leaf.collection,) + leaf.path for leaf in leaves}
    present = set(_flat(variables))
    unmapped, absent = sorted(present - mapped), sorted(mapped - present)
    if unmapped or absent:
        raise TorchImportError(
            f"the {network} mapping does not fit this Flax variables structure (the JAX module and "
            "anomaly_core/torch_import.py disagree, or network= names the wrong family):"
            + _listing("Flax variables without a PyTorch counterpart", ["/".join(p) for p in unmapped])
            + _listing("mapped variables missing from the Flax tree", ["/".join(p) for p in absent]))
    return network, leaves


# ----------------------------------------------------------------------------------------
# Conversion


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(shown) + more


def _to_numpy(value: Any, key: str, source: str) -> np.ndarray:
    """A private copy: tensor.numpy() shares memory, and jnp.asarray of it may too on CPU, so
    without the copy an in-place torch update (optimizer step, spectral norm's power
    iteration) would silently change the 'immutable' Flax arrays."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if value.dtype.is_floating_point and value.dtype.itemsize < 4:
            value = value.float()  # bfloat16 has no numpy dtype; float32 holds it exactly
        return np.array(value.numpy(), copy=True)
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
        return np.array(value, copy=True)
    raise TorchImportError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in a.shape)


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def torch_to_flax(state_dict: Mapping[str, Any], flax_variables_template: Mapping[str, Any],
                  network: str | None = None, *, source: str = "state_dict") -> dict[str, Any]:
    """A PyTorch state_dict -> Flax variables with the template's structure, shapes and dtypes.

    state_dict: tensors or arrays, possibly wrapped ({'state_dict': ...}, 'module.' prefix).
    flax_variables_template: variables of the target module (`module.init(...)` or
    `jax.eval_shape` of it: only structure, shapes and dtypes are used). network: one of
    NETWORKS, or None to recognise it from the template. `source` names the checkpoint in
    error messages. Raises TorchImportError listing missing keys, unexpected keys and
    wrong shapes. Returns {'params': ..., 'spectral': ..., 'batch_stats': ...} (the
    template's collections) of jax arrays.
    """
    import jax.numpy as jnp

    state_dict = unwrap_state_dict(state_dict, source=source)
    network, leaves = _leaves_for(flax_variables_template, network)
    bn_prefixes = {layer.torch for layer in layer_map(flax_variables_template, network)
                   if layer.kind == "batch_norm"}
    ignorable = {f"{p}.num_batches_tracked" for p in bn_prefixes}
    expected = {leaf.torch_key for leaf in leaves}
    missing, wrong = [], []
    unexpected = [f"{k} {_shape(v) if hasattr(v, 'shape') else type(v).__name__}"
                  for k, v in state_dict.items() if k not in expected and k not in ignorable]
    template = _flat(flax_variables_template)
    out: dict[str, Any] = {}
    for leaf in leaves:
        target = template[(leaf.collection,) + leaf.path]
        want = _shape(leaf.to_torch(np.zeros(_shape(target), np.float32)))
        if leaf.torch_key not in state_dict:
            missing.append(f"{leaf.torch_key} (expected shape {want})")
            continue
        value = _to_numpy(state_dict[leaf.torch_key], leaf.torch_key, source)
        if value.shape != want:
            wrong.append(f"{leaf.torch_key}: checkpoint {value.shape}, expected {want} "
                         f"(Flax {leaf.collection}/{'/'.join(leaf.path)} {_shape(target)})")
            continue
        _set(out, (leaf.collection,) + leaf.path, jnp.asarray(leaf.to_flax(value), dtype=target.dtype))
    if missing or unexpected or wrong:
        found, wanted = checkpoint_format(state_dict), spectral_norm_of(flax_variables_template)
        hint = _cbam_width_hint(network, wrong)
        if wanted is not None and found != wanted:
            hint += (f"\n  The checkpoint holds {FORMATS[found]}; this {network} is configured for "
                     f"{FORMATS[wanted]} (config.model.spectral_norm={wanted!r})."
                     + (f" Set config.model.spectral_norm={found!r} (the converter command does this "
                        "itself)." if found in ("biggan", "torch") else ""))
        elif len(missing) > len(expected) // 2:
            hint += ("\n  Most keys are missing: the checkpoint is probably of another network or another "
                     "configuration (check --network and config.model: width, image size, variant).")
        raise TorchImportError(
            f"{source} ({FORMATS[found]}) does not fit the {network} network"
            + (f" ({FORMATS[wanted]})" if wanted else "") + ":"
            + _listing("missing keys", missing) + _listing("unexpected keys", sorted(unexpected))
            + _listing("wrong shapes", wrong) + hint)
    return out


def _cbam_width_hint(network: str, wrong: list[str]) -> str:
    """The original generator builds its third CBAM for `base_channels` channels although it
    follows a 4 * base_channels block: that network cannot run a forward, and a file saved
    from it has the narrow shapes."""
    if network != "generator":
        return ""
    layers = sorted({m.group(1) for line in wrong
                     for m in [re.match(r"(g_blocks\.\d+\.1)\.ChannelGate\.mlp\.[13]\.", line)] if m})
    if not layers:
        return ""
    return (f"\n  {', '.join(layers)} (CBAM after generator block(s) {', '.join(l.split('.')[1] for l in layers)}) "
            "has the width of another block: the original generator as committed builds its third CBAM "
            "for base_channels (CBAMBlock(1 * base_channels)) after a 4 * base_channels block, so it cannot "
            "run a forward. Fix the original to CBAMBlock(4 * base_channels), train, and save again; this "
            "port builds every CBAM for its block's output width.")


def flax_to_torch(variables: Mapping[str, Any], torch_module_or_template_state_dict: Any,
                  network: str | None = None) -> collections.OrderedDict:
    """Flax variables -> a PyTorch state_dict loadable with `load_state_dict(strict=True)`.

    torch_module_or_template_state_dict: the PyTorch mirror module (or its state_dict) the
    weights are for; its keys and shapes are checked and give the order, and its
    num_batches_tracked values are kept. None builds the dict from the mapping alone
    (num_batches_tracked = 0). Returns an OrderedDict of CPU tensors.
    """
    import torch

    template = torch_module_or_template_state_dict
    if isinstance(template, torch.nn.Module):
        template = template.state_dict()
    network, leaves = _leaves_for(variables, network)
    flat = _flat(variables)
    produced: dict[str, np.ndarray] = {leaf.torch_key: leaf.to_torch(np.asarray(flat[(leaf.collection,) + leaf.path]))
                                       for leaf in leaves}
    counters = {f"{layer.torch}.num_batches_tracked" for layer in layer_map(variables, network)
                if layer.kind == "batch_norm"}
    if template is None:
        out = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in produced.items())
        for key in sorted(counters):
            out[key] = torch.tensor(0, dtype=torch.long)
        return out

    missing = sorted(k for k in produced if k not in template)
    extra = sorted(k for k in template if k not in produced and k not in counters)
    wrong = [f"{k}: Flax gives {v.shape}, template has {_shape(template[k])}"
             for k, v in produced.items() if k in template and v.shape != _shape(template[k])]
    if missing or extra or wrong:
        raise TorchImportError(
            f"the {network} variables do not fit the PyTorch template:"
            + _listing("keys the template lacks", missing) + _listing("template keys with no Flax source", extra)
            + _listing("wrong shapes", wrong))
    out = collections.OrderedDict()
    for key, ref in template.items():
        if key in produced:
            out[key] = torch.from_numpy(np.array(produced[key])).to(ref.dtype)
        elif key in counters:
            out[key] = ref.detach().clone()
    metadata = getattr(template, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # keeps spectral_norm's version stamps
    return out


# ----------------------------------------------------------------------------------------
# Files


def unwrap_state_dict(obj: Any, *, source: str = "state_dict", key: str | None = None) -> dict[str, Any]:
    """The plain state_dict inside a loaded checkpoint.

    key selects one entry of a dict holding several (e.g. 'generator'); a
    {'state_dict': ...} wrapper is opened and a 'module.' prefix on every key removed.
    """
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = list(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise TorchImportError(f"{source}: has no entry {key!r} (top-level keys: {keys})")
        obj = obj[key]
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TorchImportError(f"{source}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    not_arrays = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not hasattr(v, "shape")]
    if not_arrays:
        raise TorchImportError(
            f"{source}: not a state_dict of one network; these entries are not tensors: "
            + ", ".join(map(str, not_arrays[:_MAX_LISTED]))
            + ". If the file holds several networks or a training state, choose the entry holding the "
            "weights (key=..., --pth_key=...).")
    keys = [str(k) for k in obj]
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in zip(keys, obj.values())}
    return dict(zip(keys, obj.values()))


_BOILERPLATE = ("Weights only load failed", "In PyTorch", "Please file an issue", "Check the documentation",
                "Re-running", "Do it only", "WeightsUnpickler error:")


def _unpickling_reason(error: Exception) -> tuple[str | None, str]:
    """(the blocked global, e.g. 'posix.system', or None; the informative line) of torch's
    weights_only refusal. torch 2.x words it 'Unsupported global: GLOBAL x.y ...' or 'Trying
    to load unsupported GLOBAL x.y ...'; a corrupt file gives e.g. 'Unsupported operand 110'."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    m = re.search(r"GLOBAL\s+([\w.]+)", text) or re.search(r"[Uu]nsupported global:\s*([\w.]+)", text)
    lines = [line.strip() for line in re.split(r"\n|(?<=\.) (?=[A-Z])", text) if line.strip()]
    informative = [line for line in lines if not line.startswith(_BOILERPLATE)]
    reason = informative[0] if informative else (lines[0] if lines else type(error).__name__)
    return (m.group(1) if m else None), reason.rstrip(".")


def load_torch_checkpoint(path: str, key: str | None = None) -> dict[str, Any]:
    """Reads a PyTorch checkpoint safely and returns its plain state_dict (CPU tensors).

    Uses torch.load(path, map_location='cpu', weights_only=True): only tensors and plain
    containers are unpickled; a pickle that would import or call anything else (a class, a
    function such as os.system) is refused with a TorchImportError naming the file and the
    blocked global, and nothing of it runs. See `unwrap_state_dict` for `key` and the
    wrappers accepted.
    """
    import pickle

    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint {path} does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked, reason = _unpickling_reason(e)
        if blocked is None:
            raise TorchImportError(f"{path}: not a readable PyTorch checkpoint (unpickling stopped: {reason})") from e
        raise TorchImportError(
            f"{path}: refused to load: it references {blocked}, which is not a tensor or a plain container "
            "and could run code when unpickled (torch.load with weights_only=True blocks it). Re-save only "
            "the weights, e.g. torch.save(model.state_dict(), path), from a trusted environment.") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise TorchImportError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    return unwrap_state_dict(obj, source=path, key=key)
