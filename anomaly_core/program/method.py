"""What a method package hands the shared program: a `Method`, data rather than a subclass,
in groups by who needs them: `Training` (the training loop), `Scoring` (evaluation, predict,
export), `Checkpoints` (what a saved state fits and holds), `MethodSettings` (the config
check and --mode=config), `Legacy` (runs saved by earlier versions). docs/ARCHITECTURE.md
lists the fields. Each method package registers its own as an entry point (`methods`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax

from anomaly_core.training.train_loop import Stage

State = Any
Batch = Mapping[str, jax.Array]


ScoreFn = Callable[[State, Batch], Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Training:
    """What the training loop needs.

    init_state(config, rng) -> state pytree (pure; jitted onto replicated shardings).
    stages(config) -> training stages (their step functions are jitted by the loop).
    validation(config) -> fn(state, batch) -> {metric: per-example values (B,)} or None;
      averaged over the validation split when a checkpoint is saved, to keep the best
      (`best_metric`, lower is better; only checkpoints of `validation_stage` compete).
    progress_images(config) -> fn(state, stage, images) -> {name: pictures (rows, columns, H,
      W, C) in the data's value range}, or None; `images` (N, H, W, C) are fixed validation
      images; each result is written as a grid (TensorBoard and
      <workdir>/progress/<stage>_<step>_<name>.png).
    health_limits(config) -> ((metric, limit, meaning), ...): warned about when exceeded.
    """

    init_state: Callable[[Any, jax.Array], State]
    stages: Callable[[Any], list[Stage]]
    validation: Callable[[Any], ScoreFn | None] = lambda c: None
    best_metric: str | None = None
    validation_stage: str | None = None
    progress_images: Callable[[Any], Callable[[State, str, jax.Array], Mapping[str, jax.Array]] | None] = (
        lambda c: None)
    health_limits: Callable[[Any], tuple[tuple[str, float, str], ...]] = lambda c: ()


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What evaluation, predict and export need.

    score(config) -> fn(state, batch) -> {'image_score' (B,), 'anomaly_map' (B, H, W),
      'reconstruction' (B, H, W, C)}.
    host_score(config, mesh) -> score's function built from jitted pieces that Python calls
      in turn, or None (the program jits `score`): for work this backend runs slower inside a
      compiled loop (f-UNetGAN's test-time refinement on CPU). Export always uses `score`.
    """

    score: Callable[[Any], ScoreFn]
    host_score: Callable[[Any, Any], ScoreFn | None] = lambda c, m: None


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """What a saved state fits and holds.

    recorded_settings(config) -> {dotted setting: JSON value}: the settings the saved state
      only fits (its structure or its meaning), recorded in every checkpoint's metadata and
      checked before it is restored.
    filled_keys, fill_state(config, state, train_split) -> state: top-level state entries
      (their init_state values are placeholders of the right shape) set from the training
      split (a data.Split) when a run starts, e.g. GON's scoring context; saved with every
      checkpoint, so scoring a trained run never reads the training data again.
    refill(config, state) -> bool: a restored state holds `filled_keys` but not what this
      config scores with (f-UNetGAN: map statistics its training did not gather); fill_state
      then computes them from the training data for this evaluation (the checkpoint is unchanged).
    """

    recorded_settings: Callable[[Any], Mapping[str, Any]] = lambda c: {}
    filled_keys: tuple[str, ...] = ()
    fill_state: Callable[[Any, State, Any], State] = lambda c, s, train: s
    refill: Callable[[Any, State], bool] = lambda c, s: False


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """The method's settings.

    rules(config) -> the constraints of the method's own settings (settings.Rule), checked
      with the shared ones by program.check_config.
    required: settings every config of this method has (dotted names), checked at start-up so
      that a config of another method (or --config.method set wrongly) is one clear error that
      names `example_config`, a config file of this method.
    files: (file, {function: config section}) of the files that define the method's settings,
      the defaults first: their comments are the settings' meanings in --mode=config (config_docs).
    """

    rules: Callable[[Any], Sequence[Any]] = lambda c: ()
    required: tuple[str, ...] = ()
    example_config: str = ""
    files: tuple[tuple[str, Mapping[str, str]], ...] = ()


@dataclasses.dataclass(frozen=True)
class Legacy:
    """Runs saved by earlier versions, in one place.

    unrecorded_settings: {dotted setting: value} of the method's settings in runs saved before
      the setting existed: the recorded settings of checkpoints written before they were
      recorded (program.meta_checker), and the settings a <workdir>/config.json lacks
      (run_config; the shared ones: run_config.UNRECORDED_SETTINGS). A checkpoint written
      before a `Checkpoints.filled_keys` entry was saved gets it from the training data when
      restored (program.complete_state), with a warning.
    """

    unrecorded_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Method:
    """What a method package provides to the shared program (the groups above).

    describe(config) -> the networks' parameter tables (--mode=summary).
    torch: how the PyTorch checkpoint converter reaches the method's networks
      (torch_import.TorchNetworks), or None.
    """

    name: str
    training: Training
    scoring: Scoring
    checkpoints: Checkpoints = Checkpoints()
    settings: MethodSettings = MethodSettings()
    legacy: Legacy = Legacy()
    describe: Callable[[Any], str] = lambda c: ""
    torch: Any = None
