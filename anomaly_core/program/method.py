"""What a method package hands the shared program: a `Method`, data rather than a subclass
(docs/ARCHITECTURE.md lists its fields). Each method package registers its own as an entry
point (`methods`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax

from anomaly_core.training.train_loop import Stage

State = Any
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
    """What a method package provides to the shared program.

    init_state(config, rng) -> state pytree (pure; jitted onto replicated shardings).
    stages(config) -> training stages (their step functions are jitted by the loop).
    score(config) -> fn(state, batch) -> {'image_score' (B,), 'anomaly_map' (B,H,W),
      'reconstruction' (B,H,W,C)}.
    validation(config) -> fn(state, batch) -> {metric: per-example values (B,)} or None;
      averaged over the validation split when a checkpoint is saved, to keep the best.
    """

    name: str
    init_state: Callable[[Any, jax.Array], State]
    stages: Callable[[Any], list[Stage]]
    score: Callable[[Any], Callable[[State, Batch], Mapping[str, jax.Array]]]
    validation: Callable[[Any], Callable[[State, Batch], Mapping[str, jax.Array]] | None] = lambda c: None
    # host_score(config, mesh) -> score's function built from jitted pieces that Python calls
    # in turn, or None (the program jits `score`): for work this backend runs slower inside a
    # compiled loop (f-UNetGAN's test-time refinement on CPU). Export always uses `score`.
    host_score: Callable[[Any, Any], Callable[[State, Batch], Mapping[str, jax.Array]] | None] = lambda c, m: None
    best_metric: str | None = None  # lower is better
    validation_stage: str | None = None  # only checkpoints of this stage compete for "best"
    # progress_images(config) -> fn(state, stage, images) -> {name: pictures (rows, columns, H, W, C)
    # in the data's value range}, or None; `images` (N, H, W, C) are fixed validation images.
    # Each result is written as a grid (TensorBoard and <workdir>/progress/<stage>_<step>_<name>.png).
    progress_images: Callable[[Any], Callable[[State, str, jax.Array], Mapping[str, jax.Array]] | None] = (
        lambda c: None)
    # health_limits(config) -> ((metric, limit, meaning), ...): warned about when exceeded.
    health_limits: Callable[[Any], tuple[tuple[str, float, str], ...]] = lambda c: ()
    # recorded_settings(config) -> {dotted setting: JSON value}: the settings the saved state
    # only fits (its structure or its meaning), recorded in every checkpoint's metadata and
    # checked before it is restored.
    recorded_settings: Callable[[Any], Mapping[str, Any]] = lambda c: {}
    # {dotted setting: value} of the method's settings in runs saved before the setting existed:
    # the recorded settings of checkpoints written before they were recorded (meta_checker), and
    # the settings a <workdir>/config.json lacks (run_config; the shared ones: run_config.UNRECORDED_SETTINGS).
    unrecorded_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Settings every config of this method has (dotted names), checked at start-up so that a
    # config of another method (or --config.method set wrongly) is one clear error.
    required_settings: tuple[str, ...] = ()
    example_config: str = ""  # a config file of this method, named in that error
    # fill_state(config, state, train_split) -> state: sets the top-level state entries
    # `filled_keys` (their init_state values are placeholders of the right shape) from the
    # training split (a data.Split), e.g. GON's scoring context. They are saved with every
    # checkpoint, so scoring a trained run never reads the training data again. A checkpoint written before they were saved gets
    # them from the training data when restored, with a warning.
    fill_state: Callable[[Any, State, Any], State] = lambda c, s, train: s
    filled_keys: tuple[str, ...] = ()
    # refill(config, state) -> bool: a restored state holds `filled_keys` but not what this
    # config scores with (f-UNetGAN: map statistics its training did not gather); fill_state
    # then computes them from the training data for this evaluation (the checkpoint is unchanged).
    refill: Callable[[Any, State], bool] = lambda c, s: False
    # (file, {function: config section}) of the files that define the method's settings, the
    # defaults first: their comments are the settings' meanings in --mode=config (config_docs).
    settings_files: tuple[tuple[str, Mapping[str, str]], ...] = ()
    # describe(config) -> the networks' parameter tables (--mode=summary).
    describe: Callable[[Any], str] = lambda c: ""
    # settings(config) -> the constraints of the method's own settings (settings.Rule), checked
    # with the shared ones by check_config.
    settings: Callable[[Any], Sequence[Any]] = lambda c: ()
    # How the PyTorch checkpoint converter reaches the method's networks (torch_import.TorchNetworks), or None.
    torch: Any = None
