"""PyTorch <-> Flax weight conversion, for any network given its name map.

A network's name map (`NameMap`) is built from the structure of a Flax variables template:
a list of `Layer`s pairing a PyTorch module prefix with a Flax module path and a layer kind.
Each method package owns the name maps of its networks (funetgan_jax/torch_names.py,
gon_jax/torch_names.py and gon_jax/torch_networks.py, whose PyTorch side is the package's torch_reference.py mirror) and
hands them, with what else the converter command needs, to the core as a `TorchNetworks`
(`Method.torch`). Layouts:

  Conv2d.weight (O, I, kh, kw)          -> params kernel (kh, kw, I, O)
  ConvTranspose2d.weight (I, O, kh, kw) -> params kernel (kh, kw, O, I) (a flax ConvTranspose
      with transpose_kernel=True and explicit padding k-1-p)
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
config.model.spectral_norm selects it where a network has spectral norm (`with_spectral_norm`).

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
# Name maps and what a method hands the converter


@dataclasses.dataclass(frozen=True)
class NameMap:
    """How one network's PyTorch names pair with its Flax modules.

    network: the network's name in messages. layers(params) -> the network's `Layer`s, read
    off the structure of its Flax 'params' tree (a template or real values). explain(wrong)
    -> an extra paragraph for the wrong-shape lines of a failed import ('' when it has none).
    """

    network: str
    layers: Callable[[Mapping[str, Any]], list[Layer]]
    explain: Callable[[list[str]], str] | None = None


def numbered(names: Iterable[str], stem: str) -> dict[int, str]:
    """{k: name} of the names `stem` followed by a number k (e.g. block1, block2)."""
    found = {}
    for name in names:
        m = re.fullmatch(rf"{stem}(\d+)", name)
        if m:
            found[int(m.group(1))] = name
    return found


def _keep_config(config: Any, network: str, state_dict: Mapping[str, Any], source: str) -> Any:
    return config


def _keep_variables(config: Any, network: str, variables: Mapping[str, Any],
                    spectral_norm: str | None) -> tuple[Any, Mapping[str, Any]]:
    return config, variables


@dataclasses.dataclass(frozen=True)
class TorchNetworks:
    """What a method hands the checkpoint converter about its networks (`Method.torch`).

    title: the method in messages ('f-UNetGAN'). networks: the names --network accepts.
    whole_run: {network: example file name} of the networks that make a whole run, in --pth
    order (--network=all); empty when a run cannot be converted whole.
    flax_module(config, network) -> (Flax module, input shape of batch 1).
    name_map(config, network) -> its NameMap.
    torch_module(config, network) -> the PyTorch mirror module (imports torch).
    state_keys(state, network) -> the train-state entries holding the network's variables:
      an export reads the first, an import sets them all.
    before_import(config, network, state_dict, source) -> the config to build the network
      with for that checkpoint (the method may adapt it to the file and say so on stderr).
    before_export(config, network, variables, spectral_norm) -> (config, variables) to write;
      spectral_norm is the format asked for ('biggan' | 'torch', FORMATS) or None: as saved.
    """

    title: str
    networks: tuple[str, ...]
    flax_module: Callable[[Any, str], tuple[Any, tuple[int, ...]]]
    name_map: Callable[[Any, str], NameMap]
    torch_module: Callable[[Any, str], Any]
    state_keys: Callable[[Mapping[str, Any], str], tuple[str, ...]]
    whole_run: Mapping[str, str] = dataclasses.field(default_factory=dict)
    before_import: Callable[[Any, str, Mapping[str, Any], str], Any] = _keep_config
    before_export: Callable[[Any, str, Mapping[str, Any], str | None], tuple[Any, Mapping[str, Any]]] = (
        _keep_variables)

    def abstract_variables(self, config: Any, network: str) -> Any:
        """Shapes and dtypes of the network's Flax variables as `config` builds it."""
        return abstract_variables(*self.flax_module(config, network))


def abstract_variables(module: Any, input_shape: tuple[int, ...]) -> Any:
    """Shapes and dtypes of a Flax module's variables (jax.eval_shape of its init: no compute,
    no memory)."""
    import jax
    import jax.numpy as jnp

    return jax.eval_shape(lambda key: module.init(key, jnp.zeros(input_shape, jnp.float32), train=False),
                          jax.random.key(0))


def with_spectral_norm(config: Any, mode: str | None) -> Any:
    """A copy of `config` with config.model.spectral_norm = mode; `config` itself when mode is
    None, already set, or the method has no such setting (GON networks have no spectral norm)."""
    if mode is None or "spectral_norm" not in config.model or config.model.spectral_norm == mode:
        return config
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.spectral_norm = mode
    return config


def _mapping(variables: Mapping[str, Any], names: NameMap) -> tuple[list[Layer], list[_Leaf]]:
    """The layers and leaves of `names` for `variables`, checked to cover every variable exactly."""
    params = variables.get("params") if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping):
        keys = list(variables)[:8] if isinstance(variables, Mapping) else "-"
        raise TorchImportError("expected a Flax variables dict with a 'params' collection, got "
                               f"{type(variables).__name__} with keys {keys}")
    layers = names.layers(params)
    leaves = [leaf for layer in layers for leaf in _layer_leaves(layer, variables)]
    mapped = {(leaf.collection,) + leaf.path for leaf in leaves}
    present = set(_flat(variables))
    unmapped, absent = sorted(present - mapped), sorted(mapped - present)
    if unmapped or absent:
        raise TorchImportError(
            f"the {names.network} mapping does not fit this Flax variables structure (the JAX module and "
            "its name map disagree, or the name map is of another network):"
            + _listing("Flax variables without a PyTorch counterpart", ["/".join(p) for p in unmapped])
            + _listing("mapped variables missing from the Flax tree", ["/".join(p) for p in absent]))
    return layers, leaves

def _flat(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


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


def torch_to_flax(state_dict: Mapping[str, Any], flax_variables_template: Mapping[str, Any], names: NameMap,
                  *, source: str = "state_dict") -> dict[str, Any]:
    """A PyTorch state_dict -> Flax variables with the template's structure, shapes and dtypes.

    state_dict: tensors or arrays, possibly wrapped ({'state_dict': ...}, 'module.' prefix).
    flax_variables_template: variables of the target module (`module.init(...)` or
    `jax.eval_shape` of it: only structure, shapes and dtypes are used). names: the
    network's NameMap (its method package's torch_names). `source` names the checkpoint in
    error messages. Raises TorchImportError listing missing keys, unexpected keys and
    wrong shapes. Returns {'params': ..., 'spectral': ..., 'batch_stats': ...} (the
    template's collections) of jax arrays.
    """
    import jax.numpy as jnp

    state_dict = unwrap_state_dict(state_dict, source=source)
    layers, leaves = _mapping(flax_variables_template, names)
    ignorable = {f"{layer.torch}.num_batches_tracked" for layer in layers if layer.kind == "batch_norm"}
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
        raise TorchImportError(_misfit(state_dict, flax_variables_template, names, source,
                                       missing, sorted(unexpected), wrong, len(expected)))
    return out


def _misfit(state_dict: Mapping[str, Any], template: Mapping[str, Any], names: NameMap, source: str,
            missing: list[str], unexpected: list[str], wrong: list[str], expected: int) -> str:
    """The message of a checkpoint that does not fit: what differs, then why it may."""
    network = names.network
    found, wanted = checkpoint_format(state_dict), spectral_norm_of(template)
    hint = names.explain(wrong) if names.explain else ""
    if wanted is not None and found != wanted:
        hint += (f"\n  The checkpoint holds {FORMATS[found]}; this {network} is configured for "
                 f"{FORMATS[wanted]} (config.model.spectral_norm={wanted!r})."
                 + (f" Set config.model.spectral_norm={found!r} (the converter command does this "
                    "itself)." if found in ("biggan", "torch") else ""))
    elif len(missing) > expected // 2:
        hint += ("\n  Most keys are missing: the checkpoint is probably of another network or another "
                 "configuration (check --network and config.model: width, image size, variant).")
    return (f"{source} ({FORMATS[found]}) does not fit the {network} network"
            + (f" ({FORMATS[wanted]})" if wanted else "") + ":"
            + _listing("missing keys", missing) + _listing("unexpected keys", unexpected)
            + _listing("wrong shapes", wrong) + hint)


def flax_to_torch(variables: Mapping[str, Any], torch_module_or_template_state_dict: Any,
                  names: NameMap) -> collections.OrderedDict:
    """Flax variables -> a PyTorch state_dict loadable with `load_state_dict(strict=True)`.

    torch_module_or_template_state_dict: the PyTorch mirror module (or its state_dict) the
    weights are for; its keys and shapes are checked and give the order, and its
    num_batches_tracked values are kept. None builds the dict from the mapping alone
    (num_batches_tracked = 0). names: the network's NameMap. Returns an OrderedDict of CPU
    tensors.
    """
    import torch

    template = torch_module_or_template_state_dict
    if isinstance(template, torch.nn.Module):
        template = template.state_dict()
    layers, leaves = _mapping(variables, names)
    flat = _flat(variables)
    produced: dict[str, np.ndarray] = {leaf.torch_key: leaf.to_torch(np.asarray(flat[(leaf.collection,) + leaf.path]))
                                       for leaf in leaves}
    counters = {f"{layer.torch}.num_batches_tracked" for layer in layers if layer.kind == "batch_norm"}
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
            f"the {names.network} variables do not fit the PyTorch template:"
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
