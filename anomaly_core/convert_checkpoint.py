"""Converts PyTorch state_dicts to this project's checkpoints and back.

One network, PyTorch file <-> Orbax folder of its Flax variables:
  python -m anomaly_core.convert_checkpoint --config=configs/mvtec_bottle.py \\
      --pth=G.pth --network=generator --out=converted/generator
  python -m anomaly_core.convert_checkpoint --config=configs/gon_mvtec.py \\
      --pth=gon.pth --network=gon --out=converted/gon
A whole f-UNetGAN, three PyTorch files (generator, discriminator, encoder, in that order)
<-> a run folder that launch.py evaluates and predicts with:
  python -m anomaly_core.convert_checkpoint --config=configs/mvtec_bottle.py \\
      --pth=G.pth,D.pth,E-500.pth --network=all --workdir=runs/original_bottle
  python launch.py --config=configs/mvtec_bottle.py --workdir=runs/original_bottle --mode=eval
--reverse exports: from --out, or from the newest (or --step) checkpoint of a launch.py run
in --workdir (--network=all writes three files, a single network one), to --pth.

Run from the repository root (configs/ is imported from there). The config fixes the
architecture (config.model: widths, image size, variant switches). Spectral norm: the file
says which format it holds (the original f-UNetGAN's BigGAN-style layers with u0/sv0, or
torch's spectral_norm with weight_orig/weight_u/weight_v), and the import sets
config.model.spectral_norm to match ('biggan' or 'torch') and says so. An export writes the
format of the saved variables unless --torch_format asks for the other one: 'original'
(BigGAN-style, loads into the original's classes) or 'torch' (torch spectral_norm everywhere);
the spectral-norm state is then re-expressed (layers.convert_spectral_state).

Accepted .pth contents: a state_dict, {'state_dict': ...}, 'module.'-prefixed keys; with
--pth_key=NAME one entry of a file holding several networks. Files are read with
torch.load(weights_only=True): a pickle that could run code is refused. A checkpoint that
does not fit the configured network exits with status 2 and lists its missing keys,
unexpected keys and wrong shapes, and names the format found and the one expected. Nothing
existing is overwritten without --force (and never a run folder that holds checkpoints).
Needs the `torch` extra (pip install -e .[torch]). In Python:
anomaly_core.torch_import.load_torch_checkpoint / torch_to_flax / flax_to_torch.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from anomaly_core.checkpointing import CheckpointError

NETWORKS = ("generator", "discriminator", "encoder", "all", "gon")
FUNETGAN_NETWORKS = ("generator", "discriminator", "encoder")
TORCH_FORMATS = {"original": "biggan", "torch": "torch"}  # --torch_format -> spectral-norm mode


def _define_flags() -> dict[str, Any]:
    """The command's flags, defined only when it runs as a command (importing this module
    for its functions leaves absl's global flags alone, e.g. launch.py's --config)."""
    return dict(
        config=config_flags.DEFINE_config_file("config", None, "ml_collections config file (fixes the architecture).",
                                               lock_config=True),
        pth=flags.DEFINE_list("pth", None, "PyTorch checkpoint(s): read (default) or written (--reverse); "
                              "with --network=all three, generator,discriminator,encoder."),
        network=flags.DEFINE_enum("network", None, NETWORKS, "Which network of the config the weights belong to "
                                  "('all': G, D and E of an f-UNetGAN config, with --workdir)."),
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


def _method(config: Any, network: str) -> str:
    method = config.get("method")
    want = "gon" if network == "gon" else "funetgan"
    if method != want:
        raise ValueError(f"--network={network} needs a {want} config, but config.method is {method!r}")
    return method


def with_spectral_norm(config: Any, mode: str | None) -> Any:
    """A copy of an f-UNetGAN config with config.model.spectral_norm = mode (None: unchanged)."""
    if mode is None or config.get("method") != "funetgan" or config.model.spectral_norm == mode:
        return config
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.spectral_norm = mode
    return config


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


def _import_variables(config: Any, network: str, pth: str, pth_key: str | None) -> tuple[Any, Any]:
    """(config with the file's spectral-norm mode, Flax variables of the file)."""
    from anomaly_core.torch_import import FORMATS, checkpoint_format, load_torch_checkpoint, torch_to_flax

    state_dict = load_torch_checkpoint(pth, key=pth_key)
    found = checkpoint_format(state_dict)
    if config.get("method") == "funetgan" and found in TORCH_FORMATS.values() and found != config.model.spectral_norm:
        print(f"note: {pth} holds {FORMATS[found]}: using config.model.spectral_norm={found!r}", file=sys.stderr)
        config = with_spectral_norm(config, found)
    if config.get("method") == "funetgan" and found == "biggan":
        from funetgan_jax.build import ORIGINAL_COMPUTE

        differ = {k: (config.model[k], v) for k, v in ORIGINAL_COMPUTE.get(network, {}).items()
                  if config.model[k] != v}
        if differ:
            print(f"note: {pth} has the original f-UNetGAN's format; the original's {network} computes with "
                  + ", ".join(f"config.model.{k}={v!r}" for k, (_, v) in differ.items())
                  + ", this config has " + ", ".join(f"{c!r}" for c, _ in differ.values())
                  + " (no weights depend on it, so the file loads either way); to reproduce the original's "
                  "outputs use configs/mvtec_bottle.py:reference", file=sys.stderr)
    return config, torch_to_flax(state_dict, abstract_variables(config, network), source=pth)


def convert(config: Any, network: str, pth: str, out: str, *, pth_key: str | None = None,
            force: bool = False) -> str:
    """PyTorch file -> Orbax checkpoint of the Flax variables. Returns the output folder."""
    if network == "all":
        raise ValueError("--network=all converts a whole f-UNetGAN into a run folder: pass --workdir, not --out")
    if os.path.exists(out) and not force:  # before the work, not after it
        raise FileExistsError(f"--out={out} already exists; choose a new folder or pass --force")
    _, variables = _import_variables(config, network, pth, pth_key)
    return save_variables(out, variables, force=force)


def _write_torch(config: Any, network: str, variables: Any, pth: str, torch_format: str | None) -> str:
    """Flax variables (any spectral-norm mode) -> a state_dict file in `torch_format`."""
    import torch

    from anomaly_core.torch_import import flax_to_torch, spectral_norm_of
    from funetgan_jax.layers import convert_spectral_state

    mode = TORCH_FORMATS[torch_format] if torch_format else spectral_norm_of(variables)
    target = with_spectral_norm(config, mode)
    if mode is not None and mode != spectral_norm_of(variables):
        variables = convert_spectral_state(variables, abstract_variables(target, network))
    torch.save(flax_to_torch(variables, torch_mirror(target, network)), pth)
    return pth


def export(config: Any, network: str, out: str, pth: str, *, force: bool = False,
           torch_format: str | None = None) -> str:
    """Orbax checkpoint of the Flax variables -> PyTorch state_dict file. Returns the file path."""
    from anomaly_core.torch_import import spectral_norm_of

    if os.path.exists(pth) and not force:
        raise FileExistsError(f"--pth={pth} already exists; choose another file or pass --force")
    # Read as saved (its spectral-norm state says which mode it has); the PyTorch mirror built
    # from the config checks every key and shape when the state_dict is made.
    variables = restore_variables(out)
    config = with_spectral_norm(config, spectral_norm_of(variables))
    return _write_torch(config, network, variables, pth, torch_format)


def _funetgan_slots(state: dict) -> dict[str, str]:
    return {"generator": "g_ema" if "g_ema" in state else "g", "discriminator": "d", "encoder": "e"}


def _restore_run(config: Any, workdir: str, step: int | None) -> tuple[int, dict]:
    """(step, train state) of a launch.py run: its newest checkpoint, or `step`."""
    from anomaly_core import parallel, program

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"--workdir={workdir} has no checkpoints folder: not a launch.py run (or not trained)")
    method = program.method_module(config).METHOD
    state, restored_step, _ = program.restore_for_inference(method, config, workdir, parallel.make_mesh(),
                                                            step=step)
    return restored_step, state


def export_run(config: Any, network: str, workdir: str, pths: list[str], *, step: int | None = None,
               force: bool = False, torch_format: str | None = None) -> list[str]:
    """A launch.py run's checkpoint -> PyTorch state_dict file(s): one network, or with
    network='all' the generator (its moving average when the run keeps one), discriminator
    and encoder of an f-UNetGAN run. Returns the files written."""
    names = _network_names(config, network, pths)
    for pth in pths:
        if os.path.exists(pth) and not force:
            raise FileExistsError(f"--pth={pth} already exists; choose another file or pass --force")
    _, state = _restore_run(config, workdir, step)
    for name, pth in zip(names, pths):
        variables = state["model"] if name == "gon" else state[_funetgan_slots(state)[name]]
        _write_torch(config, name, variables, pth, torch_format)
    return pths


def import_run(config: Any, pths: list[str], workdir: str, *, pth_key: str | None = None) -> str:
    """Three PyTorch files (generator, discriminator, encoder) -> a new launch.py run folder
    whose one checkpoint, at the end of the configured training, holds them (optimiser
    states fresh): launch.py --mode=eval / predict with the same --config then score with the
    imported networks. Returns the checkpoint folder."""
    import jax

    from anomaly_core import parallel, program

    _network_names(config, "all", pths)
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
        raise FileExistsError(f"--workdir={workdir} already holds checkpoints; choose a new run folder")
    imported, modes = {}, set()
    for name, pth in zip(FUNETGAN_NETWORKS, pths):
        used, imported[name] = _import_variables(config, name, pth, pth_key)
        modes.add(used.model.spectral_norm)
    if len(modes) > 1:
        raise ValueError(f"--pth files mix spectral-norm formats ({sorted(modes)}); convert them to one "
                         "(e.g. --reverse --torch_format) first")
    config = with_spectral_norm(config, modes.pop())
    method = program.method_module(config).METHOD
    mesh = parallel.make_mesh()
    state = dict(program._init(method, config, mesh))  # optimiser states (and the rest) fresh
    slots = _funetgan_slots(state)
    for name, variables in imported.items():
        state[slots[name]] = variables
    if "g_ema" in state:
        state["g"] = imported["generator"]
    total = sum(s.num_steps for s in method.stages(config))
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


def _network_names(config: Any, network: str, pths: list[str]) -> list[str]:
    names = list(FUNETGAN_NETWORKS) if network == "all" else [network]
    _method(config, names[0])
    if len(pths) != len(names):
        raise ValueError(f"--network={network} needs {len(names)} --pth file(s) ({', '.join(names)}), "
                         f"got {len(pths)}: {pths}")
    return names


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
        from anomaly_core.torch_import import TorchImportError

        if value["workdir"] and value["reverse"]:
            from anomaly_core import run_config

            # The run's own settings (config.json), as --mode=eval reads them.
            config = run_config.for_inference(value["workdir"], value["config"],
                                              [a[len("--config."):].split("=")[0] for a in sys.argv
                                               if a.startswith("--config.")])
            written = export_run(config, network, value["workdir"], pths, step=value["step"],
                                 force=value["force"], torch_format=value["torch_format"])
        elif value["workdir"]:
            if network != "all":
                raise ValueError("importing into a run folder (--workdir) needs the whole f-UNetGAN: "
                                 "--network=all --pth=G.pth,D.pth,E.pth")
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
