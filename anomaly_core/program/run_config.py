"""A workdir describes its run: `<workdir>/config.json` holds the settings it was trained with,
and evaluation and prediction read them back, so no setting is typed twice.

For `--mode=eval` / `--mode=predict` the run's own seed, method, data, model and training
settings come from config.json; the evaluation, checkpoint and multi-host settings come
from the command line (they may differ between uses of one run). An explicit command-line
override of a run setting is applied when it is a data setting (e.g. the dataset moved:
`--config.data.root=...`) and refused, naming both values, when it is a model or training
setting, or a data setting that decides what the network sees (`INPUT_SETTINGS`), that
differs from the run's (its checkpoints only fit the run's own).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import ml_collections

from anomaly_core.data import augmentation
from anomaly_core.evaluation.report import write_atomically
from anomaly_core.program import methods

CONFIG_FILE = "config.json"
RUN_SECTIONS = ("seed", "method", "data", "model", "train")  # the run's; the rest is per use
FIXED_SECTIONS = ("seed", "method", "model", "train")  # an override must not change these
# The data settings that decide what the network sees (its input size, channels and value
# range): an override must equal the run's, as a model setting's must. The others (the data
# root, the split selection) may change between uses of one run.
INPUT_SETTINGS = ("data.image_size", "data.channels", "data.value_range")


# The settings every method reads, each with the value a run whose config.json was written
# before the setting existed was used with (a method's own: its Method.legacy.unrecorded_settings).
# config.json holds every section, and eval/predict without --config read all of them from it.
UNRECORDED_SETTINGS = {
    "config.model.dtype": "float32",
    "config.checkpoint.async_save": True,
    "config.eval.threshold_rule": "auto",
    "config.eval.baseline": True,
    "config.eval.predict_heatmaps": -1,
    "config.eval.checkpoint": "best",
    "config.distributed.initialize": False,
    "config.distributed.coordinator_address": None,
    "config.distributed.num_processes": None,
    "config.distributed.process_id": None,
    "config.distributed.cpu_collectives": None,
}


def path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def write(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes `<workdir>/config.json` atomically (the caller is process 0)."""
    os.makedirs(workdir, exist_ok=True)
    write_atomically(path(workdir), config.to_json_best_effort(indent=2).encode())


def _tuples(value: Any) -> Any:
    """JSON arrays back to the tuples the config files use."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def read(workdir: str) -> ml_collections.ConfigDict | None:
    """The run's config from `<workdir>/config.json`, or None when the workdir has none."""
    try:
        with open(path(workdir)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path(workdir)} is not a readable config ({e}); pass the run's --config") from e
    data_section = data.get("data") if isinstance(data, dict) else None
    if isinstance(data_section, dict) and isinstance(data_section.get("augment"), bool):
        data_section["augment"] = augmentation.LEGACY[data_section["augment"]]
    return ml_collections.ConfigDict(_tuples(data))


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _get(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node[part]
    return node


def for_inference(workdir: str, given: ml_collections.ConfigDict | None,
                  explicit: Iterable[str] = ()) -> ml_collections.ConfigDict | None:
    """The config to evaluate or predict the run in `workdir` with (see the module docstring).

    `given`: the command line's config (None without --config); `explicit`: the dotted names
    (without 'config.') overridden on the command line. Returns `given` unchanged when the
    workdir has no config.json (runs written before it existed), None when neither exists.
    """
    saved = read(workdir)
    if saved is None:
        return given
    _fill_unrecorded(saved)
    if given is None:
        return saved
    explicit = set(explicit)
    for name in sorted(explicit):
        if name.split(".")[0] not in FIXED_SECTIONS and name not in INPUT_SETTINGS:
            continue
        try:
            old, new = _get(saved, name), _get(given, name)
        except (KeyError, AttributeError):
            continue
        if _json(old) != _json(_tuples(new)):  # by value: (0, 1) equals (0.0, 1.0)
            raise ValueError(
                f"--config.{name}={new!r} differs from the run in {workdir}, trained with {name}={old!r} "
                f"({path(workdir)}): its checkpoints only fit the run's own settings. Drop the override "
                "(evaluation and prediction read the run's settings from that file), or train a new run.")
    config = given.copy_and_resolve_references()
    with config.unlocked():
        for section in RUN_SECTIONS:
            if section not in saved:
                continue
            if isinstance(saved[section], ml_collections.ConfigDict) and section in config:
                for key, value in saved[section].items():
                    if f"{section}.{key}" not in explicit:  # data.* overrides win (e.g. a moved dataset)
                        config[section][key] = value
            else:
                config[section] = saved[section]
    return config


def _fill_unrecorded(saved: ml_collections.ConfigDict) -> None:
    """A config.json written before a setting existed gets the value the run then used
    (UNRECORDED_SETTINGS and `Method.legacy.unrecorded_settings`, e.g. f-UNetGAN's spectral norm
    'torch'), not the default of today's configs, which its checkpoints may not fit."""
    try:
        unrecorded = {**UNRECORDED_SETTINGS, **methods.for_config(saved).legacy.unrecorded_settings}
    except ValueError:
        return  # an unknown config.method is reported where the method is resolved
    for name, value in unrecorded.items():
        *parents, key = name.split(".")[1:]
        node = saved
        for part in parents:
            if part not in node:
                # A section the run's config did not have (config.distributed before it existed).
                node[part] = ml_collections.ConfigDict()
            node = node[part]
        if key not in node:
            node[key] = value  # read() returns an unlocked ConfigDict
