"""The program every method runs: build, train (resuming), evaluate, restore for inference.

A method describes itself with a `Method` (method.py): how to initialise its state pytree, its training
stages, and its score function. Everything else (mesh, data iterators, checkpoints,
writers, evaluation outputs) is shared here, once.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from anomaly_core import data as data_lib
from anomaly_core import settings
from anomaly_core.evaluation import evaluation, visualise
from anomaly_core.networks import precision
from anomaly_core.program import run_config
from anomaly_core.program.method import Method, State
from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer, CheckpointError, CheckpointUnusable
from anomaly_core.training.train_loop import LoopConfig, compile_ahead, make_writer, train

log = logging.getLogger(__name__)


def checkpoint_meta(method: Method, config) -> dict[str, Any]:
    """The metadata every checkpoint of this run carries (method and recorded settings)."""
    return {"method": method.name, "settings": dict(method.checkpoints.recorded_settings(config)), "run": run_settings(config)}


# Settings a resumed run may change without --allow_changes: more steps, and what only
# decides how often the loop logs, saves or draws.
RESUMABLE_CHANGES = ("config.train.generator_steps", "config.train.encoder_steps", "config.train.steps",
                     "config.train.log_every", "config.train.checkpoint_every", "config.train.image_every",
                     "config.data.read_threads")


def run_settings(config) -> dict[str, Any]:
    """The settings a training run is made of: config.seed, config.data.*, config.model.*,
    config.train.* as {dotted name: JSON value} (evaluation, checkpoint and distribution
    settings may differ between the processes that use one run)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}.{key}", value)
        else:
            flat[prefix] = node

    for section in ("seed", "data", "model", "train"):
        if section in config:
            walk(f"config.{section}", config[section].to_dict() if hasattr(config[section], "to_dict")
                 else config[section])
    return json.loads(json.dumps(flat, default=str))


def check_resume(ckpt: Checkpointer, method: Method, config, *, allow_changes: bool = False) -> None:
    """Before a training run touches a workdir that holds checkpoints: the newest checkpoint
    must fit the config (meta_checker), must not be past the configured training (that is
    an evaluation: --mode=eval), and, unless allow_changes, must have been trained with the
    same run settings (run_settings) but for RESUMABLE_CHANGES. Raises CheckpointError
    listing every difference; nothing in the workdir is changed."""
    step = ckpt.latest_step()
    if step is None:
        return
    path = os.path.join(ckpt.directory, str(step))
    meta = ckpt.read_meta(step)
    if meta is None:
        return  # unreadable: the restore falls back and says so
    meta_checker(method, config)(path, meta)
    total = sum(s.num_steps for s in method.training.stages(config))
    if step > total:
        raise CheckpointError(
            f"the run in {ckpt.directory} has trained {step} steps, this config trains {total}: raise its "
            "steps to continue training, or evaluate the trained model with --mode=eval")
    saved = meta.get("run")
    if allow_changes or not isinstance(saved, Mapping):
        return
    current = run_settings(config)
    names = sorted((set(saved) | set(current)) - set(RESUMABLE_CHANGES))
    changed = [f"{n}={saved.get(n, '(absent)')!r} there, {current.get(n, '(absent)')!r} now" for n in names
               if saved.get(n) != current.get(n)]
    if changed:
        raise CheckpointError(
            f"checkpoint {path} belongs to a run trained with other settings; resuming would mix them:\n  "
            + "\n  ".join(changed) + "\nUse another --workdir for a new run, the run's own settings to continue "
            "it, or --allow_changes to continue it with these deliberately.")


# What a checkpoint's state only fits, or only means something with: the network's settings
# and what it sees (run_config.INPUT_SETTINGS).
TRAINED_SETTINGS = ("config.model.", *(f"config.{n}" for n in run_config.INPUT_SETTINGS))
COMPUTE_DTYPE = precision.DTYPE_RULE.name  # not among them: the parameters are float32 whatever it is


def trained_differences(meta: dict, config, prefixes: Sequence[str] = TRAINED_SETTINGS) -> list[str]:
    """'<setting>=<value> there, <value> in the config' for each setting whose dotted name
    starts with one of `prefixes` and whose value in the checkpoint's recorded run settings
    (metadata 'run') differs from `config`'s; [] for checkpoints that record none."""
    saved = meta.get("run")
    if not isinstance(saved, Mapping):
        return []
    current = run_settings(config)
    # A setting one side lacks (added or removed since) is Method.legacy.unrecorded_settings' business.
    names = sorted(n for n in set(saved) & set(current) if n.startswith(tuple(prefixes)) and n != COMPUTE_DTYPE)
    return [f"{n}={saved[n]!r} there, {current[n]!r} in the config" for n in names if saved[n] != current[n]]


def misfit(config) -> Callable[[dict], str | None]:
    """Checkpointer.restore's `misfit`: why a checkpoint whose state did not restore does not
    fit `config` (its network settings differ), or None (then it is unreadable)."""

    def explain(meta: dict) -> str | None:
        wrong = trained_differences(meta, config, ("config.model.",))
        return "; ".join(wrong) if wrong else None

    return explain


def meta_checker(method: Method, config, *, inference: bool = False) -> Callable[[str, dict], None]:
    """check_meta for Checkpointer.restore: a CheckpointError naming each recorded setting
    whose value in the checkpoint differs from the config, and the flag that restores it.
    With `inference` (evaluation, predict, export) also each of TRAINED_SETTINGS that differs
    from the run the checkpoint was trained in: scores of a network fed other inputs than it
    was trained on are wrong without any error."""
    current = json.loads(json.dumps(dict(method.checkpoints.recorded_settings(config))))

    def check(path: str, meta: dict) -> None:
        saved = {**method.legacy.unrecorded_settings, **dict(meta.get("settings") or {})}
        if meta.get("method") not in (None, method.name):
            raise CheckpointError(f"checkpoint {path} was written by method {meta.get('method')!r}, "
                                  f"but config.method is {method.name!r}: use that run's config")
        wrong = [(k, saved[k], v) for k, v in current.items() if k in saved and saved[k] != v]
        if wrong:
            lines = [f"{k}={old!r} there, {new!r} in the config (pass --{k}={old})" for k, old, new in wrong]
            raise CheckpointError(f"checkpoint {path} was written with other model settings, which its "
                                  "variables only fit: " + "; ".join(lines)
                                  + ". Nothing was changed in the checkpoint.")
        if inference and (wrong := trained_differences(meta, config)):
            raise CheckpointError(f"checkpoint {path} does not fit these settings: {'; '.join(wrong)}. It was "
                                  "trained with the first values and is scored only with them (the run's "
                                  "config.json holds them). Nothing was changed in the checkpoint.")

    return check


def shared_rules(config) -> list[settings.Rule]:
    """The constraints of the settings the shared program reads, whatever the method."""
    d = config.data
    rules = [
        settings.integer("config.seed", 0),
        *data_lib.data_rules(),
        settings.integer("config.train.batch_size", 1),
        settings.integer("config.train.log_every", 1),
        settings.integer("config.train.checkpoint_every", 1),
        settings.integer("config.checkpoint.keep", 1),
        settings.boolean("config.checkpoint.async_save"),
        precision.DTYPE_RULE,
        *evaluation.eval_rules(),
    ]
    for key in ("image_size", "channels"):  # the networks are built from config.model, the data from config.data
        if key in config.model:
            rules.append(settings.Rule(f"config.model.{key}", f"config.data.{key} ({d[key]!r})",
                                       lambda v, want=d[key]: v == want))
    return rules


def check_config(config, method: Method) -> None:
    """The one validation of a config, run at the start of every mode: that it has the
    settings `method` reads, then every rule of the shared program (shared_rules) and of the
    method (method.settings.rules). settings.SettingError names the first setting at fault."""
    for name in method.settings.required:
        if settings.lookup(config, name) is settings.MISSING:
            raise settings.SettingError(
                f"{name} is missing: config.method={method.name!r} reads the settings of its own configs "
                f"(e.g. {method.settings.example_config}); this config looks like another method's. Check "
                "--config and --config.method.")
    settings.check(config, [*shared_rules(config), *method.settings.rules(config)])


def init_key(seed: int) -> jax.Array:
    """The key that initialises the parameters.

    'unsafe_rbg' derives the hundreds of per-variable keys with XLA's bit generator instead
    of threefry hashing, which cuts the init program's CPU compile time about 3x (64 s vs
    180 s for the quickstart's G, D and E on a loaded 2-core machine). Initial values stay a
    deterministic function of the seed; training steps keep threefry keys.
    """
    return jax.random.key(seed, impl="unsafe_rbg")


def fresh_state(method: Method, config, mesh, splits: data_lib.Splits) -> State:
    """The run's fresh state, replicated over `mesh`: init_state from the seed, then
    fill_state from the training split (what training starts from; the converter fills it
    with imported networks)."""
    init = jax.jit(lambda rng: method.training.init_state(config, rng), out_shardings=parallel.replicated(mesh))
    # Inside the mesh context whoever calls: the program is then the one training compiles
    # (outside it the key gets another sharding annotation), so the converter's import
    # reuses the compilation cache's entry instead of compiling the initialisation again.
    with jax.set_mesh(mesh):
        state = init(init_key(config.seed))
    if method.checkpoints.filled_keys:
        state = jax.device_put(method.checkpoints.fill_state(config, state, splits["train"]), parallel.replicated(mesh))
    return state


def restore_target(method: Method) -> Callable[[Any, dict], Any] | None:
    """Checkpointer.restore's `target`: the part of the abstract state a checkpoint holds,
    given its metadata (checkpoints without `state_keys` predate `method.checkpoints.filled_keys`)."""
    if not method.checkpoints.filled_keys:
        return None

    def target(abstract: Any, meta: dict) -> Any:
        keys = meta.get("state_keys")
        if keys is None:
            keys = [k for k in abstract if k not in method.checkpoints.filled_keys]
        return {k: v for k, v in abstract.items() if k in keys}

    return target


def abstract_state(method: Method, config, mesh) -> State:
    shapes = jax.eval_shape(lambda rng: method.training.init_state(config, rng), init_key(0))
    rep = parallel.replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def jit_score(method: Method, config, mesh) -> Callable[[State, Any], Any]:
    """The score function evaluation and the API call: `fn(state, global batch)`, the
    method's host_score where it has one, otherwise its score jitted over `mesh` (state
    replicated, batch sharded)."""
    host = method.scoring.host_score(config, mesh)
    if host is not None:
        return host
    fn = method.scoring.score(config)
    rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    jitted = jax.jit(fn, in_shardings=(rep, shard), out_shardings=shard)
    return jitted


def _check_score_settings(method: Method, config, mesh) -> State:
    """Traces the method's score function on abstract inputs (no compilation, no data): the
    method's evaluation settings (e.g. config.eval.image_score) fail here, before training.
    Returns the abstract state it traced with (`abstract_state`)."""
    n, size, channels = int(config.eval.batch_size), int(config.data.image_size), int(config.data.channels)
    batch = {"image": jax.ShapeDtypeStruct((n, size, size, channels), np.float32),
             "mask": jax.ShapeDtypeStruct((n, size, size), np.float32),
             "label": jax.ShapeDtypeStruct((n,), np.int32), "index": jax.ShapeDtypeStruct((n,), np.int32),
             "valid": jax.ShapeDtypeStruct((n,), np.bool_)}
    abstract = abstract_state(method, config, mesh)
    try:
        jax.eval_shape(method.scoring.score(config), abstract, batch)
    except ValueError as e:
        raise ValueError(f"the evaluation settings do not fit {method.name}: {e}") from e
    return abstract


def preflight(method: Method, config, mesh, splits: data_lib.Splits | None = None) -> State:
    """Every check that can fail an evaluation, run before training or restoring: the config
    (check_config), the method's evaluation settings (its score function traced), and (with
    `splits`, the run's data) the test and validation splits (evaluation.check_splits).
    Returns the state's abstract shapes (`abstract_state`), which the score check traces with."""
    check_config(config, method)
    abstract = _check_score_settings(method, config, mesh)
    if splits is not None:
        evaluation.check_splits(config, splits)
    return abstract


def _checkpointer(config, workdir: str, best_metric: str | None) -> Checkpointer:
    c = config.checkpoint
    return Checkpointer(workdir, keep=c.keep, best_metric=best_metric, best_mode="min",
                        async_save=c.async_save)


def _validation_fn(method: Method, config, mesh, splits: data_lib.Splits):
    fn = method.training.validation(config)
    if fn is None or method.training.best_metric is None:
        return None
    jitted = jax.jit(fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                     out_shardings=parallel.batch_sharded(mesh))
    val = splits["val"]
    if len(val) == 0:
        return None

    def validate(state, stage: str) -> dict[str, float]:
        if method.training.validation_stage not in (None, stage):
            return {}
        sums: dict[str, float] = {}
        count = 0
        for local in data_lib.eval_batches(config.data, val, batch_size=config.eval.batch_size,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
            batch = parallel.global_batch(local, mesh)
            out = {k: evaluation.gather(v) for k, v in jitted(state, batch).items()}
            valid = evaluation.gather(batch["valid"]).astype(bool)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(np.asarray(v)[valid].sum())
            count += int(valid.sum())
        return {k: v / max(count, 1) for k, v in sums.items()}

    return validate


PROGRESS_IMAGES = 8  # fixed validation images shown in the progress grids


def _progress_image_fn(method: Method, config, workdir: str, mesh, writer, splits: data_lib.Splits):
    """The loop's image_fn: the method's progress images of fixed validation images, as grids."""
    fn = method.training.progress_images(config)
    # config.train.image_every is a setting of the methods with progress images only (GON has neither).
    if fn is None or not config.train.image_every:
        return None
    split = splits["val"]
    if len(split) == 0:
        split = splits["train"]
    first = next(iter(data_lib.eval_batches(config.data, split, batch_size=PROGRESS_IMAGES)))
    images = np.asarray(first["image"])[np.asarray(first["valid"], bool)]
    rep = parallel.replicated(mesh)
    jitted = jax.jit(fn, static_argnums=1, in_shardings=(rep, rep), out_shardings=rep)
    images = jax.device_put(images, rep)
    folder = os.path.join(workdir, "progress")
    value_range = tuple(config.data.value_range)

    def write(state, stage: str, step: int) -> None:
        grids = {}
        for name, tiles in jitted(state, stage, images).items():
            tiles = evaluation.gather(tiles)
            grids[name] = visualise.image_grid(tiles.reshape(-1, *tiles.shape[2:]), value_range,
                                               columns=tiles.shape[1])
        if jax.process_index() != 0:
            return
        os.makedirs(folder, exist_ok=True)
        for name, grid in grids.items():
            visualise.save_png(os.path.join(folder, f"{stage}_{step:06d}_{name}.png"), grid)
        writer.write_images(step, {f"progress/{name}": grid[None] for name, grid in grids.items()})

    return write


def train_and_evaluate(method: Method, config, workdir: str, *, allow_changes: bool = False) -> dict[str, Any]:
    """Trains (resuming from `<workdir>/checkpoints` when present, see check_resume), then evaluates.
    Everything the evaluation needs is checked first (`preflight`), so a bad setting or split
    fails in seconds rather than after training."""
    mesh = parallel.make_mesh()
    splits = data_lib.Splits(config.data)
    abstract = preflight(method, config, mesh, splits)
    per_process = parallel.check_batch_size(config.train.batch_size, mesh, "config.train.batch_size")
    stages = method.training.stages(config)
    train_iter = data_lib.train_iterator(
        config.data, global_batch_size=config.train.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(), split=splits["train"],
    )
    log.info("%s: %d devices in %d processes, global batch %d (%d per process), stages %s", method.name,
             mesh.devices.size, jax.process_count(), config.train.batch_size, per_process,
             [(s.name, s.num_steps) for s in stages])
    ckpt = _checkpointer(config, workdir, method.training.best_metric)
    try:
        check_resume(ckpt, method, config, allow_changes=allow_changes)
    except CheckpointError:
        ckpt.close()
        raise
    writer = make_writer(workdir)
    write_config(workdir, config)
    try:
        with jax.set_mesh(mesh):
            # The stages' steps compile in background threads while _init compiles and runs its
            # own program: on a 2-core CPU the quickstart starts training 20 s sooner.
            ahead = compile_ahead(stages, mesh, config.seed, abstract, train_iter,
                                  start=ckpt.latest_step() or 0)
            state = fresh_state(method, config, mesh, splits)
            image_fn = _progress_image_fn(method, config, workdir, mesh, writer, splits)
            state, _ = train(
                state=state,
                ahead=ahead,
                stages=stages,
                train_iter=train_iter,
                mesh=mesh,
                checkpointer=ckpt,
                writer=writer,
                loop=LoopConfig(seed=config.seed, log_every=config.train.log_every,
                                checkpoint_every=config.train.checkpoint_every,
                                best_metric=method.training.best_metric,
                                image_every=int(config.train.image_every) if image_fn is not None else 0,
                                health_limits=tuple(method.training.health_limits(config))),
                validation_fn=_validation_fn(method, config, mesh, splits),
                image_fn=image_fn,
                meta=checkpoint_meta(method, config),
                check_meta=meta_checker(method, config),
                misfit=misfit(config),
                restore_target=restore_target(method),
            )
            total = sum(s.num_steps for s in stages)
            step, how = selected_step(ckpt, method, config)
            if step in (None, total):  # the final state (always checkpointed) is the one in memory
                step = total
            else:
                state, step, how = restore_for_inference(method, config, workdir, mesh, splits=splits,
                                                         abstract=abstract)
            log.info("evaluating checkpoint step %d (%s)", step, how)
            score = jit_score(method, config, mesh)
            results = evaluation.evaluate(lambda b: score(state, b), config, workdir, mesh, splits,
                                          writer=writer, step=step, checkpoint=how)
    finally:
        ckpt.close()
        _close(writer)
    return results


def _close(writer) -> None:
    """Flushes and closes the TensorBoard writer (its background thread stops with it, rather
    than being torn down mid-write at interpreter exit); a failure (e.g. a full disk) is
    logged, so that it never hides the error that ended the run."""
    try:
        writer.close()
    except OSError as e:
        log.warning("could not write the last TensorBoard events: %s", e)


def write_config(workdir: str, config) -> None:
    """`<workdir>/config.json`: the settings the run was made with (process 0 writes it;
    eval and predict read it back, anomaly_core.program.run_config)."""
    if jax.process_index() == 0:
        run_config.write(workdir, config)


CHECKPOINT_CHOICES = "'best' (lowest validation metric, where recorded), 'latest' or a step number"


def selected_step(ckpt: Checkpointer, method: Method, config) -> tuple[int | None, str]:
    """(step, how it was chosen) by config.eval.checkpoint: 'best' (the checkpoint with
    the lowest validation metric, or the newest when none records one), 'latest' (None: the
    newest readable one) or a step number."""
    choice = config.eval.checkpoint
    if choice == "latest":
        return None, "latest"
    if choice == "best":
        step = ckpt.best_step(method.training.best_metric) if method.training.best_metric else None
        if step is None:
            return None, "latest (no checkpoint records a validation metric)"
        return step, f"best (lowest validation {method.training.best_metric})"
    return int(choice), f"step {int(choice)}"


def complete_state(method: Method, config, state: State, abstract: State, step: int,
                   splits: data_lib.Splits | None, mesh) -> State:
    """`state` restored from checkpoint `step`, with its `Checkpoints.filled_keys` taken from
    the training split (`splits`, else read from config.data) when the checkpoint lacks them
    (written before they were saved; placeholders of `abstract`'s shapes are filled) or holds
    them without what this config scores with (`Checkpoints.refill`). Otherwise unchanged."""
    saved = method.checkpoints
    missing = [k for k in saved.filled_keys if k in abstract and k not in state]
    if missing:
        log.warning("checkpoint step %d was written before %s was saved with it: taking it from the training "
                    "data (config.data), so scores depend on that data until the run saves a new checkpoint",
                    step, ", ".join(missing))
    elif saved.refill(config, state):
        log.info("checkpoint step %d holds %s without what this config scores with (its training did not "
                 "need it): taking it from the training data (config.data) for this evaluation",
                 step, ", ".join(saved.filled_keys))
    else:
        return state
    placeholders = {k: jax.numpy.zeros(abstract[k].shape, abstract[k].dtype) for k in missing}
    train = (splits or data_lib.Splits(config.data))["train"]
    return jax.device_put(saved.fill_state(config, {**state, **placeholders}, train), parallel.replicated(mesh))


def restore_for_inference(method: Method, config, workdir: str, mesh, step: int | None = None,
                          splits: data_lib.Splits | None = None,
                          abstract: State | None = None) -> tuple[State, int, str]:
    """(state, step, how it was chosen) of the run in `workdir`: `step` when given, else the
    checkpoint config.eval.checkpoint selects (selected_step). `splits` (the run's data) is
    read only for a checkpoint that predates its `method.checkpoints.filled_keys`. `abstract`:
    `abstract_state(method, config, mesh)` when the caller has it (`preflight` returns it)."""
    ckpt = _checkpointer(config, workdir, None)
    try:
        how = f"step {step}"
        if step is None:
            step, how = selected_step(ckpt, method, config)
        if step is not None and step not in ckpt.all_steps():
            raise CheckpointError(f"no checkpoint of step {step} in {ckpt.directory} (steps: {ckpt.all_steps()}; "
                                  f"config.eval.checkpoint is {CHECKPOINT_CHOICES})")
        if abstract is None:
            abstract = abstract_state(method, config, mesh)
        try:
            restored = ckpt.restore(abstract, step=step, check_meta=meta_checker(method, config, inference=True),
                                    target=restore_target(method), misfit=misfit(config))
        except CheckpointUnusable as e:
            if not how.startswith("best"):
                raise
            log.warning("%s; using the newest checkpoint that verifies instead", e)
            how = "latest (the best checkpoint does not verify)"
            restored = ckpt.restore(abstract, check_meta=meta_checker(method, config, inference=True),
                                    target=restore_target(method), misfit=misfit(config))
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(
            f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
            f"(--mode=train with the same --workdir and --config)"
        )
    step, state, _, meta = restored
    state = complete_state(method, config, state, abstract, step, splits, mesh)
    total = sum(s.num_steps for s in method.training.stages(config))
    log.info("using checkpoint step %d of %d (%s)", step, total, how)
    return state, step, how


def evaluate(method: Method, config, workdir: str) -> dict[str, Any]:
    mesh = parallel.make_mesh()
    splits = data_lib.Splits(config.data)
    abstract = preflight(method, config, mesh, splits)
    with jax.set_mesh(mesh):
        state, step, how = restore_for_inference(method, config, workdir, mesh, splits=splits, abstract=abstract)
        score = jit_score(method, config, mesh)
        writer = make_writer(workdir)
        try:
            return evaluation.evaluate(lambda b: score(state, b), config, workdir, mesh, splits, writer=writer,
                                       step=step, checkpoint=how)
        finally:
            _close(writer)
