"""Converts a PyTorch state_dict of one network into an Orbax checkpoint of its Flax variables.

  python -m anomaly_core.convert_checkpoint --config=configs/mvtec_bottle.py \\
      --pth=generator.pth --network=generator --out=converted/generator
  python -m anomaly_core.convert_checkpoint --config=configs/gon_mvtec.py \\
      --pth=gon.pth --network=gon --out=converted/gon

Run from the repository root (configs/ is imported from there). The config fixes the
architecture (config.model: widths, image size, variant switches): --network picks the
generator, discriminator or encoder of an f-UNetGAN config, or 'gon' for the model of a GON
config (config.model.kind: conv/implicit/variational GON or the CAE). The output folder
holds the Flax variables dict ({'params', 'spectral' and/or 'batch_stats'}) written with
orbax.checkpoint.StandardCheckpointer; read it back with `restore_variables(out)`.

--reverse exports instead: it reads the Orbax checkpoint in --out and writes a PyTorch
state_dict to --pth, loadable with `load_state_dict(strict=True)` into the PyTorch mirror
(funetgan_jax/torch_reference.py, gon_jax/torch_reference.py).

Accepted .pth contents: a state_dict, {'state_dict': ...}, 'module.'-prefixed keys; with
--pth_key=NAME one entry of a file holding several networks. Files are read with
torch.load(weights_only=True): a pickle that could run code is refused. A checkpoint that
does not fit the configured network exits with status 2 and lists its missing keys,
unexpected keys and wrong shapes. Needs the `torch` extra (pip install -e .[torch]).
In Python: anomaly_core.torch_import.load_torch_checkpoint / torch_to_flax / flax_to_torch.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

NETWORKS = ("generator", "discriminator", "encoder", "gon")


def _define_flags() -> dict[str, Any]:
    """The command's flags, defined only when it runs as a command (importing this module
    for its functions leaves absl's global flags alone, e.g. launch.py's --config)."""
    return dict(
        config=config_flags.DEFINE_config_file("config", None, "ml_collections config file (fixes the architecture).",
                                               lock_config=True),
        pth=flags.DEFINE_string("pth", None, "PyTorch checkpoint: read (default) or written (--reverse)."),
        network=flags.DEFINE_enum("network", None, NETWORKS, "Which network of the config the weights belong to."),
        out=flags.DEFINE_string("out", None, "Orbax checkpoint folder: written (default) or read (--reverse)."),
        reverse=flags.DEFINE_bool("reverse", False, "Export: Orbax checkpoint in --out -> PyTorch state_dict in --pth."),
        pth_key=flags.DEFINE_string("pth_key", None, "Entry of the .pth holding the weights, when it holds several."),
        force=flags.DEFINE_bool("force", False, "Overwrite an existing --out folder (or --pth file with --reverse)."),
    )


def _method(config: Any, network: str) -> str:
    method = config.get("method")
    want = "gon" if network == "gon" else "funetgan"
    if method != want:
        raise ValueError(f"--network={network} needs a {want} config, but config.method is {method!r}")
    return method


def flax_module(config: Any, network: str) -> tuple[Any, tuple[int, ...]]:
    """(Flax module, input shape of batch 1) of `network` as the config builds it."""
    if _method(config, network) == "gon":
        from gon_jax import build as gon_build

        module = gon_build.build_gon_model(config.model)
        return module, tuple(gon_build.model_input(config.model, 1).shape)
    from funetgan_jax import build as fb

    module = {"generator": fb.build_generator, "discriminator": fb.build_discriminator,
              "encoder": fb.build_encoder}[network](config.model)
    return module, fb.input_shape(module, config.model)


def torch_mirror(config: Any, network: str) -> Any:
    """The PyTorch mirror module of `network` (needs torch)."""
    if _method(config, network) == "gon":
        from gon_jax.torch_reference import build_model

        return build_model(config.model)
    from funetgan_jax.torch_reference import build_network

    return build_network(network, config.model)


def abstract_variables(config: Any, network: str) -> Any:
    """Shapes and dtypes of the network's Flax variables (jax.eval_shape: no compute, no memory)."""
    import jax
    import jax.numpy as jnp

    module, shape = flax_module(config, network)
    return jax.eval_shape(lambda key: module.init(key, jnp.zeros(shape, jnp.float32), train=False),
                          jax.random.key(0))


def save_variables(directory: str, variables: Any, *, force: bool = False) -> str:
    """Writes a Flax variables dict with orbax StandardCheckpointer; returns the absolute path."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(directory)
    if os.path.exists(path) and not force:
        raise FileExistsError(f"--out={directory} already exists; choose a new folder or pass --force")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, variables, force=force)
    checkpointer.wait_until_finished()
    return path


def restore_variables(directory: str, abstract: Any | None = None) -> Any:
    """Reads a variables dict written by `save_variables` (into `abstract`'s structure if given)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Orbax checkpoint folder {directory} does not exist")
    return ocp.StandardCheckpointer().restore(path, abstract)


def convert(config: Any, network: str, pth: str, out: str, *, pth_key: str | None = None,
            force: bool = False) -> str:
    """PyTorch file -> Orbax checkpoint of the Flax variables. Returns the output folder."""
    from anomaly_core.torch_import import load_torch_checkpoint, torch_to_flax

    if os.path.exists(out) and not force:  # before the work, not after it
        raise FileExistsError(f"--out={out} already exists; choose a new folder or pass --force")
    state_dict = load_torch_checkpoint(pth, key=pth_key)
    variables = torch_to_flax(state_dict, abstract_variables(config, network), source=pth)
    return save_variables(out, variables, force=force)


def export(config: Any, network: str, out: str, pth: str, *, force: bool = False) -> str:
    """Orbax checkpoint of the Flax variables -> PyTorch state_dict file. Returns the file path."""
    import torch

    from anomaly_core.torch_import import flax_to_torch

    if os.path.exists(pth) and not force:
        raise FileExistsError(f"--pth={pth} already exists; choose another file or pass --force")
    variables = restore_variables(out, abstract_variables(config, network))
    state_dict = flax_to_torch(variables, torch_mirror(config, network))
    torch.save(state_dict, pth)
    return pth


def main(argv: list[str], flag_holders: dict[str, Any]) -> int:
    """The command: 0 on success, 2 with a one-paragraph error on stderr otherwise."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value = {name: holder.value for name, holder in flag_holders.items()}
    if value["config"] is None:
        raise app.UsageError("--config is required, e.g. --config=configs/mvtec_bottle.py")
    for name in ("pth", "network", "out"):
        if not value[name]:
            raise app.UsageError(f"--{name} is required")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    try:
        from anomaly_core.torch_import import TorchImportError

        if value["reverse"]:
            path = export(value["config"], value["network"], value["out"], value["pth"], force=value["force"])
        else:
            path = convert(value["config"], value["network"], value["pth"], value["out"], pth_key=value["pth_key"],
                           force=value["force"])
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print("error: the converter needs PyTorch: pip install -e .[torch]", file=sys.stderr)
        return 2
    except (TorchImportError, FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    _holders = _define_flags()
    app.run(lambda argv: main(argv, _holders))
