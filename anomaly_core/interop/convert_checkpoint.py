"""Converts PyTorch state_dicts to this project's checkpoints and back.

One network, PyTorch file <-> Orbax folder of its Flax variables:
  python -m anomaly_core.interop.convert_checkpoint --config=configs/mvtec_bottle.py \\
      --pth=G.pth --network=generator --out=converted/generator
  python -m anomaly_core.interop.convert_checkpoint --config=configs/gon_mvtec.py \\
      --pth=gon.pth --network=gon --out=converted/gon
A whole run, one PyTorch file per network of the method's run (f-UNetGAN: generator,
discriminator, encoder, in that order; GON: its one model) <-> a run folder that launch.py
evaluates and predicts with:
  python -m anomaly_core.interop.convert_checkpoint --config=configs/mvtec_bottle.py \\
      --pth=G.pth,D.pth,E-500.pth --network=all --workdir=runs/original_bottle
  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/original_bottle --mode=eval
--reverse exports: from --out, or from the newest (or --step) checkpoint of a launch.py run
in --workdir (--network=all writes one file per network of the run, a single network one),
to --pth.

The method is config.method's (anomaly_core.program.methods); it hands its networks to this command
as `Method.torch` (a torch_import.TorchNetworks: funetgan_jax/torch_names.py,
gon_jax/torch_networks.py), which names the --network values it accepts and holds their
PyTorch name maps. Run from the repository root (configs/ is imported from there). The
config fixes the architecture (config.model: widths, image size, variant switches).
Spectral norm (f-UNetGAN): the file says which format it holds (the original f-UNetGAN's
BigGAN-style layers with u0/sv0, or torch's spectral_norm with weight_orig/weight_u/weight_v),
and the import sets config.model.spectral_norm to match ('biggan' or 'torch') and says so. An
export writes the format of the saved variables unless --torch_format asks for the other one:
'original' (BigGAN-style, loads into the original's classes) or 'torch' (torch spectral_norm
everywhere); the spectral-norm state is then re-expressed (funetgan_jax.layers.convert_spectral_state).

Accepted .pth contents: a state_dict, {'state_dict': ...}, 'module.'-prefixed keys; with
--pth_key=NAME one entry of a file holding several networks. Files are read with
torch.load(weights_only=True): a pickle that could run code is refused. A checkpoint that
does not fit the configured network exits with status 2 and lists its missing keys,
unexpected keys and wrong shapes, and names the format found and the one expected. Nothing
existing is overwritten without --force (and never a run folder that holds checkpoints).
Needs the `torch` extra (pip install -e .[torch]). In Python:
anomaly_core.interop.torch_import.load_torch_checkpoint / torch_to_flax / flax_to_torch, with the
network's name map (e.g. funetgan_jax.torch_names.GENERATOR).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from anomaly_core.program import methods
from anomaly_core.training.checkpointing import CheckpointError
from anomaly_core.interop.torch_import import (TorchImportError, TorchNetworks, flax_to_torch, load_torch_checkpoint,
                                               spectral_norm_of, torch_to_flax, with_spectral_norm)

ALL = "all"  # --network: every network of a whole run (TorchNetworks.whole_run)
TORCH_FORMATS = {"original": "biggan", "torch": "torch"}  # --torch_format -> spectral-norm format (FORMATS)


def registered_networks() -> dict[str, TorchNetworks]:
    """{config.method: its TorchNetworks} of every installed method that has one."""
    found = {}
    for name in sorted(methods.registered()):
        torch_networks = methods.load(name).torch
        if torch_networks is not None:
            found[name] = torch_networks
    return found


def _define_flags() -> dict[str, Any]:
    """The command's flags, defined only when it runs as a command (importing this module
    for its functions leaves absl's global flags alone, e.g. launch.py's --config)."""
    registered = registered_networks()
    choices = list(dict.fromkeys(n for t in registered.values() for n in t.networks)) + [ALL]
    runs = "; ".join(f"{name}: {','.join(t.whole_run)}" for name, t in registered.items() if t.whole_run)
    return dict(
        config=config_flags.DEFINE_config_file("config", None, "ml_collections config file (fixes the architecture).",
                                               lock_config=True),
        pth=flags.DEFINE_list("pth", None, "PyTorch checkpoint(s): read (default) or written (--reverse); "
                              f"with --network=all one per network of the run, in its order ({runs})."),
        network=flags.DEFINE_enum("network", None, choices, "Which network of the config the weights belong to "
                                  f"('all': every network of a run of the config's method, with --workdir: {runs})."),
        out=flags.DEFINE_string("out", None, "Orbax folder of one network's variables: written (default) or read "
                                "(--reverse)."),
        workdir=flags.DEFINE_string("workdir", None, "A launch.py run folder instead of --out: a new run made of the "
                                    "imported networks (default), or the run to export from (--reverse)."),
        step=flags.DEFINE_integer("step", None, "--reverse --workdir: the checkpoint step (default: the newest)."),
        reverse=flags.DEFINE_bool("reverse", False, "Export: --out or --workdir -> PyTorch state_dict(s) in --pth."),
        torch_format=flags.DEFINE_enum("torch_format", None, list(TORCH_FORMATS),
                                       "--reverse: 'original' (BigGAN-style u0/sv0, the original f-UNetGAN) or "
                                       "'torch' (torch spectral_norm); default: the saved variables' own."),
        pth_key=flags.DEFINE_string("pth_key", None, "Entry of the .pth holding the weights, when it holds several."),
        force=flags.DEFINE_bool("force", False, "Overwrite an existing --out folder (or --pth file with --reverse)."),
    )


def torch_networks(config: Any) -> TorchNetworks:
    """The TorchNetworks of config.method."""
    method = methods.for_config(config)
    if method.torch is None:
        raise ValueError(f"config.method={method.name!r} has no PyTorch checkpoint converter "
                         "(its Method.torch is None)")
    return method.torch


def _networks(config: Any, network: str) -> tuple[TorchNetworks, list[str]]:
    """(the method's TorchNetworks, the networks `network` stands for: itself, or with 'all'
    the networks of a whole run); ValueError when the method has no such network."""
    found = torch_networks(config)
    if network == ALL and found.whole_run:
        return found, list(found.whole_run)
    if network == ALL:
        raise ValueError(f"--network=all: a run of config.method={config.method!r} cannot be converted whole; "
                         f"pass one of {list(found.networks)}")
    if network not in found.networks:
        raise ValueError(_foreign_network(config, network, found))
    return found, [network]


def _foreign_network(config: Any, network: str, found: TorchNetworks) -> str:
    owners = [name for name, other in registered_networks().items() if network in other.networks]
    if owners:
        return f"--network={network} needs a {owners[0]} config, but config.method is {config.method!r}"
    return (f"--network={network} is not a network of config.method={config.method!r}: one of "
            f"{list(found.networks) + [ALL]}")


def flax_module(config: Any, network: str) -> tuple[Any, tuple[int, ...]]:
    """(Flax module, input shape of batch 1) of `network` as the config builds it."""
    found, _ = _networks(config, network)
    return found.flax_module(config, network)


def abstract_variables(config: Any, network: str) -> Any:
    """Shapes and dtypes of the network's Flax variables (jax.eval_shape: no compute, no memory)."""
    found, _ = _networks(config, network)
    return found.abstract_variables(config, network)


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


def _import_variables(config: Any, network: str, pth: str, pth_key: str | None) -> tuple[Any, Any]:
    """(the config the method builds the network with for this file, Flax variables of the file)."""
    found, _ = _networks(config, network)
    state_dict = load_torch_checkpoint(pth, key=pth_key)
    config = found.before_import(config, network, state_dict, pth)
    return config, torch_to_flax(state_dict, found.abstract_variables(config, network),
                                 found.name_map(config, network), source=pth)


def convert(config: Any, network: str, pth: str, out: str, *, pth_key: str | None = None,
            force: bool = False) -> str:
    """PyTorch file -> Orbax checkpoint of the Flax variables. Returns the output folder."""
    found, _ = _networks(config, network)
    if network == ALL:
        raise ValueError(f"--network=all converts a whole {found.title} into a run folder: pass --workdir, not --out")
    if os.path.exists(out) and not force:  # before the work, not after it
        raise FileExistsError(f"--out={out} already exists; choose a new folder or pass --force")
    _, variables = _import_variables(config, network, pth, pth_key)
    return save_variables(out, variables, force=force)


def _write_torch(config: Any, network: str, variables: Any, pth: str, torch_format: str | None) -> str:
    """Flax variables (as saved) -> a state_dict file, in `torch_format` where the method has one."""
    import torch

    found, _ = _networks(config, network)
    config, variables = found.before_export(config, network, variables,
                                            TORCH_FORMATS[torch_format] if torch_format else None)
    torch.save(flax_to_torch(variables, found.torch_module(config, network), found.name_map(config, network)), pth)
    return pth


def export(config: Any, network: str, out: str, pth: str, *, force: bool = False,
           torch_format: str | None = None) -> str:
    """Orbax checkpoint of the Flax variables -> PyTorch state_dict file. Returns the file path."""
    _networks(config, network)
    if os.path.exists(pth) and not force:
        raise FileExistsError(f"--pth={pth} already exists; choose another file or pass --force")
    # Read as saved (the method adapts the config to what it holds, e.g. its spectral-norm
    # format); the PyTorch mirror checks every key and shape when the state_dict is made.
    return _write_torch(config, network, restore_variables(out), pth, torch_format)


def _restore_run(config: Any, workdir: str, step: int | None) -> tuple[int, dict]:
    """(step, train state) of a launch.py run: its newest checkpoint, or `step`."""
    from anomaly_core.program import program
    from anomaly_core.training import parallel

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"--workdir={workdir} has no checkpoints folder: not a launch.py run (or not trained)")
    state, restored_step, _ = program.restore_for_inference(methods.for_config(config), config, workdir,
                                                            parallel.make_mesh(), step=step)
    return restored_step, state


def export_run(config: Any, network: str, workdir: str, pths: list[str], *, step: int | None = None,
               force: bool = False, torch_format: str | None = None) -> list[str]:
    """A launch.py run's checkpoint -> PyTorch state_dict file(s): one network, or with
    network='all' every network of the run (an f-UNetGAN's generator, its moving average
    when the run keeps one, discriminator and encoder). Returns the files written."""
    found, names = _run_networks(config, network, pths)
    for pth in pths:
        if os.path.exists(pth) and not force:
            raise FileExistsError(f"--pth={pth} already exists; choose another file or pass --force")
    _, state = _restore_run(config, workdir, step)
    for name, pth in zip(names, pths):
        _write_torch(config, name, state[found.state_keys(state, name)[0]], pth, torch_format)
    return pths


def import_run(config: Any, pths: list[str], workdir: str, *, pth_key: str | None = None) -> str:
    """One PyTorch file per network of a whole run (f-UNetGAN: generator, discriminator,
    encoder) -> a new launch.py run folder whose one checkpoint, at the end of the configured
    training, holds them (optimiser states fresh): launch.py --mode=eval / predict with the
    same --config then score with the imported networks. Returns the checkpoint folder."""
    found, names = _run_networks(config, ALL, pths)
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
        raise FileExistsError(f"--workdir={workdir} already holds checkpoints; choose a new run folder")
    imported = {name: _import_variables(config, name, pth, pth_key)[1] for name, pth in zip(names, pths)}
    modes = {spectral_norm_of(variables) for variables in imported.values()}
    if len(modes) > 1:
        raise ValueError(f"--pth files mix spectral-norm formats ({sorted(modes)}); convert them to one "
                         "(e.g. --reverse --torch_format) first")
    return _write_run(with_spectral_norm(config, modes.pop()), found, imported, workdir, pths)


def _write_run(config: Any, found: TorchNetworks, imported: dict[str, Any], workdir: str, pths: list[str]) -> str:
    """A fresh run state with the imported networks, saved as the run's one checkpoint."""
    import jax

    from anomaly_core import data as data_lib
    from anomaly_core.program import program
    from anomaly_core.training import parallel

    method = methods.for_config(config)
    mesh = parallel.make_mesh()
    # Optimiser states (and the rest) fresh; the splits are read only for filled state entries.
    state = dict(program.fresh_state(method, config, mesh, data_lib.Splits(config.data)))
    for name, variables in imported.items():
        for key in found.state_keys(state, name):
            state[key] = variables
    total = sum(s.num_steps for s in method.training.stages(config))
    program.write_config(workdir, config)
    ckpt = program.Checkpointer(workdir, keep=1, async_save=False)
    try:
        meta = {**program.checkpoint_meta(method, config), "stage": "imported", "step": total,
                "total_steps": total, "imported_from": [os.path.abspath(p) for p in pths]}
        ckpt.save(total, jax.device_put(state, parallel.replicated(mesh)), meta=meta, force=True)
        ckpt.wait()
    finally:
        ckpt.close()
    return os.path.join(os.path.abspath(workdir), "checkpoints", str(total))


def _run_networks(config: Any, network: str, pths: list[str]) -> tuple[TorchNetworks, list[str]]:
    found, names = _networks(config, network)
    if len(pths) != len(names):
        raise ValueError(f"--network={network} needs {len(names)} --pth file(s) ({', '.join(names)}), "
                         f"got {len(pths)}: {pths}")
    return found, names


def main(argv: list[str], flag_holders: dict[str, Any]) -> int:
    """The command: 0 on success, 2 with a one-paragraph error on stderr otherwise."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value = {name: holder.value for name, holder in flag_holders.items()}
    if value["config"] is None:
        raise app.UsageError("--config is required, e.g. --config=configs/mvtec_bottle.py")
    for name in ("pth", "network"):
        if not value[name]:
            raise app.UsageError(f"--{name} is required")
    if bool(value["out"]) == bool(value["workdir"]):
        raise app.UsageError("pass exactly one of --out (one network's variables) and --workdir (a launch.py run)")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    pths, network = value["pth"], value["network"]
    try:
        if value["workdir"] and value["reverse"]:
            from anomaly_core.program import run_config

            # The run's own settings (config.json), as --mode=eval reads them.
            config = run_config.for_inference(value["workdir"], value["config"],
                                              [a[len("--config."):].split("=")[0] for a in sys.argv
                                               if a.startswith("--config.")])
            written = export_run(config, network, value["workdir"], pths, step=value["step"],
                                 force=value["force"], torch_format=value["torch_format"])
        elif value["workdir"]:
            if network != ALL:
                found, _ = _networks(value["config"], ALL)
                raise ValueError(f"importing into a run folder (--workdir) needs the whole {found.title}: "
                                 f"--network=all --pth={','.join(found.whole_run.values())}")
            written = [import_run(value["config"], pths, value["workdir"], pth_key=value["pth_key"])]
        else:
            if len(pths) != 1:
                raise ValueError(f"--out takes one network and one --pth file, got {pths}")
            if value["reverse"]:
                written = [export(value["config"], network, value["out"], pths[0], force=value["force"],
                                  torch_format=value["torch_format"])]
            else:
                written = [convert(value["config"], network, pths[0], value["out"], pth_key=value["pth_key"],
                                   force=value["force"])]
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print("error: the converter needs PyTorch: pip install -e .[torch]", file=sys.stderr)
        return 2
    except (TorchImportError, FileNotFoundError, FileExistsError, ValueError, KeyError, CheckpointError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    _holders = _define_flags()
    app.run(lambda argv: main(argv, _holders))
