"""Orbax checkpoints: train state and data-iterator state saved together, atomically.

Layout: `<workdir>/checkpoints/<step>/{state,data,meta}`. The latest `keep` checkpoints are
preserved, plus the best one by a validation metric when checkpoints carry one.

Every checkpoint is verified when restored: its metadata holds a SHA-256 digest of every
array of the state and of the data-iterator state (`digests`), taken from the values being
saved; the restored values must hash to the same digests. A checkpoint that cannot be read
(partially written, corrupted structure) or does not verify (corrupted array data, a changed
data position) is skipped on restore with a warning naming the step and the leaf, falling
back to the previous good one; the skipped ones are renamed `<step>.unreadable-<time>` (kept
for inspection) so the resumed run can save those steps again.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class CheckpointUnusable(CheckpointError):
    """The checkpoint asked for by step cannot be read or does not verify."""


class ShapeMismatch(ValueError):
    """A checkpoint's stored arrays have other shapes than the state restored into."""


def _names(path: tuple) -> tuple:
    """A pytree key path as plain names (dict keys, attribute names and indices alike): Orbax's
    metadata stores a NamedTuple's fields (optax states) as dict keys, so `keystr` of the
    stored and the wanted path differ there."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def shape_mismatch(stored: Any, wanted: Any) -> str | None:
    """The first leaf present in both trees whose stored shape differs from the wanted one
    (both pytrees of objects with `.shape`), as 'name: stored (a,), wanted (b,)'; else None."""
    shapes = {_names(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(stored)
              if hasattr(leaf, "shape")}
    for p, leaf in jax.tree_util.tree_leaves_with_path(wanted):
        name = _names(p)
        if name in shapes and shapes[name] != tuple(leaf.shape):
            return f"{'/'.join(name)}: stored {shapes[name]}, wanted {tuple(leaf.shape)}"
    return None


def check_workdir_writable(workdir: str) -> None:
    """Fails fast (before any training) when the workdir cannot be written or is full."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * (1 << 20))  # 1 MiB: catches a full disk, not only permissions
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(
            f"--workdir={workdir!r} is not writable ({e.strerror or e}); checkpoints, metrics "
            "and images go there. Choose a writable folder with free space."
        ) from e


DIGEST_ALGORITHM = "sha256"


def _host_array(leaf: Any) -> np.ndarray:
    """A leaf's values on this host (the local copy of a replicated array; key data for PRNG keys)."""
    if isinstance(leaf, jax.Array):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)
    return np.ascontiguousarray(np.asarray(leaf))


def _leaf_digest(leaf: Any) -> str:
    a = _host_array(leaf)
    h = hashlib.sha256(f"{a.dtype.name}{a.shape}".encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def state_digests(state: Any) -> dict[str, str]:
    """{leaf path (jax.tree_util.keystr): SHA-256 of its dtype, shape and bytes} of a pytree.

    Replicated arrays are hashed from this host's copy. Leaves are hashed in parallel threads
    (hashlib releases the GIL on large buffers)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        hexes = list(pool.map(_leaf_digest, [leaf for _, leaf in flat]))
    return {jax.tree_util.keystr(path): h for (path, _), h in zip(flat, hexes)}


def data_digest(data_state: dict) -> str:
    """SHA-256 of the data-iterator state's canonical JSON."""
    return hashlib.sha256(json.dumps(data_state, sort_keys=True).encode()).hexdigest()


def verify_digests(state: Any, data_state: dict, meta: dict) -> str | None:
    """None when `state` and `data_state` hash to the digests recorded in `meta`; otherwise
    what differs (leaf names, at most 5). Checkpoints written before digests were recorded
    have none and pass (with a warning by the caller)."""
    recorded = meta.get("digests")
    if not isinstance(recorded, dict):
        return None
    expected = recorded.get("state") or {}
    actual = state_digests(state)
    problems = [f"{name} (digest differs)" for name in sorted(expected) if name in actual
                and actual[name] != expected[name]]
    problems += [f"{name} (missing)" for name in sorted(set(expected) - set(actual))]
    problems += [f"{name} (not recorded)" for name in sorted(set(actual) - set(expected))]
    if recorded.get("data") is not None and data_digest(data_state) != recorded["data"]:
        problems.insert(0, "data-iterator state (digest differs)")
    if not problems:
        return None
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return f"{len(problems)} item(s) fail verification: " + ", ".join(problems[:5]) + more


class Checkpointer:
    """Saves and restores {state, data-iterator state, metadata} under `<workdir>/checkpoints`.

    `best_metric`: name of a metric passed to `save(..., metrics=...)`; with `best_mode`
    'min' or 'max' the best such checkpoint is kept in addition to the latest `keep`.
    """

    def __init__(
        self,
        workdir: str,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        async_save: bool = True,
    ):
        if keep < 1:
            raise ValueError(f"config.checkpoint.keep={keep} must be >= 1")
        if best_mode not in ("min", "max"):
            raise ValueError(f"config.checkpoint.best_mode={best_mode!r} must be 'min' or 'max'")
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        policies: list[Any] = [pp.LatestN(n=keep)]
        if best_metric:
            policies.append(
                pp.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "meta")
        )

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(
        self,
        step: int,
        state: Any,
        *,
        data_state: dict | None = None,
        meta: dict | None = None,
        metrics: dict | None = None,
        force: bool = False,
    ) -> bool:
        data_state = dict(data_state or {})
        keys = {"state_keys": sorted(state)} if isinstance(state, dict) else {}
        meta = {**(meta or {}), **keys, "digests": {"algorithm": DIGEST_ALGORITHM, "state": state_digests(state),
                                            "data": data_digest(data_state)}}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
        )
        try:
            # Also where an earlier asynchronous save's failure surfaces.
            return self.manager.save(step, args=args, metrics=metrics, force=force)
        except Exception as e:  # noqa: BLE001 - a full disk, lost permissions, a vanished folder
            raise self._write_failed(step, e) from e

    def _write_failed(self, step: int, error: Exception) -> CheckpointError:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            if isinstance(cause, OSError) and cause.strerror:
                break
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        elif code := re.search(r"os_error_code='(\d+)'", str(error)):  # tensorstore's errors carry errno
            reason = os.strerror(int(code.group(1)))
        else:
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        try:
            done = sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())
        except OSError:
            done = []
        kept = f"the checkpoints written before (newest: step {done[-1]}) are kept" if done else \
            "no checkpoint was written yet"
        return CheckpointError(
            f"writing checkpoints in {self.directory} failed by step {step} ({reason}); {kept}. Free space "
            "or restore write access, then rerun the same command to resume.")

    def best_step(self, metric: str) -> int | None:
        """The step whose recorded validation `metric` (metadata 'validation') is lowest; None
        when no checkpoint records it (ties: the newest)."""
        best: tuple[float, int] | None = None
        for s in self.all_steps():
            value = ((self.read_meta(s) or {}).get("validation") or {}).get(metric)
            if isinstance(value, (int, float)) and (best is None or value <= best[0]):
                best = (float(value), s)
        return None if best is None else best[1]

    def read_meta(self, step: int) -> dict | None:
        """The metadata saved with `step`, or None when it cannot be read."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is dealt with by restore()
            return None
        return dict(restored["meta"] or {})

    def restore(self, abstract_state: Any, step: int | None = None,
                check_meta: Callable[[str, dict], None] | None = None,
                target: Callable[[Any, dict], Any] | None = None,
                misfit: Callable[[dict], str | None] | None = None) -> tuple[int, Any, dict, dict] | None:
        """Restores the newest readable checkpoint (or `step`): (step, state, data, meta).

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` carrying shardings (from
        `jax.eval_shape`), so arrays come back placed. Returns None when there is none.
        `check_meta(path, meta)` runs on a checkpoint's metadata before its state is read and
        raises (CheckpointError) when the checkpoint was written for another configuration;
        that error stops the restore and nothing is moved or changed. `target(abstract_state,
        meta)` gives the part of the abstract state a checkpoint holds (older checkpoints may
        lack entries added since; the caller fills them). `misfit(meta)` says why a checkpoint
        whose state did not restore does not fit the settings (or None): such a checkpoint is
        readable with its own settings, so that is an error naming them, once, and nothing is
        moved (rather than "unreadable" and a fall back to older checkpoints that fit no better).
        """
        steps = [step] if step is not None else list(reversed(self.all_steps()))
        failures = []
        for s in steps:
            meta = self.read_meta(s) if (check_meta or target or misfit) is not None else None
            if meta is not None and check_meta is not None:
                check_meta(os.path.join(self.directory, str(s)), meta)
            wanted = target(abstract_state, meta) if (target is not None and meta is not None) else abstract_state
            try:
                self._check_shapes(s, wanted)
                restored = self.manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(wanted),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                if meta is not None and misfit is not None and (why := misfit(meta)):
                    raise CheckpointError(
                        f"checkpoint step {s} in {self.directory} does not fit the settings: {why}. Its state "
                        "only fits the settings it was trained with; nothing was changed in it.") from None
                log.debug("checkpoint step %d in %s: the full error", s, self.directory, exc_info=True)
                first = str(e).splitlines()[0] if str(e) else ""  # TensorStore's run to many lines
                msg = (f"checkpoint step {s} in {self.directory} is unreadable ({type(e).__name__}: "
                       f"{first[:300]}{' ...' if len(first) > 300 or len(str(e).splitlines()) > 1 else ''})")
                failures.append(msg)
                log.warning("%s%s", msg, "; falling back to an earlier checkpoint" if step is None else "")
                continue
            data_state, meta = dict(restored["data"] or {}), dict(restored["meta"] or {})
            problem = verify_digests(restored["state"], data_state, meta)
            if problem is not None:
                msg = f"checkpoint step {s} in {self.directory} is corrupted: {problem}"
                failures.append(msg)
                log.warning("%s%s", msg, "; falling back to an earlier checkpoint" if step is None else "")
                continue
            if "digests" not in meta:
                log.warning("checkpoint step %d in %s has no digests (written by an older version): restored "
                            "without verification", s, self.directory)
            if failures:
                log.warning("restored checkpoint step %d after skipping %d unusable one(s)", s, len(failures))
                self._set_aside(steps[: steps.index(s)])
            return s, restored["state"], data_state, meta
        if failures and step is not None:
            raise CheckpointUnusable(failures[0] + "; nothing was changed in it (choose another step)")
        if failures:
            raise CheckpointError(
                "no checkpoint could be restored:\n  " + "\n  ".join(failures)
                + "\nTo train a new run instead, choose another --workdir."
            )
        return None

    def _check_shapes(self, step: int, wanted: Any) -> None:
        """Raises ShapeMismatch before any array is read when the stored shapes differ from
        `wanted`'s: Orbax's reads of the other arrays, already under way when one fails, would
        finish after its event loop closed and print tracebacks at exit. Metadata that cannot
        be read is left to the restore itself to report."""
        try:
            stored = ocp.StandardCheckpointHandler().metadata(
                epath.Path(self.directory) / str(step) / "state")
        except Exception:  # noqa: BLE001 - the restore reports an unreadable checkpoint
            return
        why = shape_mismatch(getattr(stored, "tree", stored), wanted)
        if why is not None:
            raise ShapeMismatch(f"Requested shape does not fit the stored one ({why})")

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unreadable checkpoints to `<step>.unreadable-<time>`: kept for inspection, and
        out of the way of the resumed run, which saves those steps again (Orbax refuses to save
        a step whose folder exists)."""
        if jax.process_index() == 0:
            for s in steps:
                src = os.path.join(self.directory, str(s))
                dst = f"{src}.unreadable-{int(time.time())}"
                os.rename(src, dst)
                log.warning("moved the unreadable checkpoint %s to %s", src, dst)
        ocp.multihost.sync_global_processes(f"checkpointer_set_aside_{steps[-1]}")
        self.manager.reload()

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - see save()
            raise self._write_failed(self.latest_step() or 0, e) from e

    def close(self) -> None:
        """Waits for pending writes and releases the manager; a failed write was already
        reported (save/wait), so here it is only logged."""
        try:
            self.manager.close()
        except Exception as e:  # noqa: BLE001
            log.warning("closing the checkpoints in %s: %s: %s", self.directory, type(e).__name__, e)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete pytree, to restore into."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)), tree
    )
