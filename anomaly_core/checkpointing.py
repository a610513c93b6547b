"""Orbax checkpoints: train state and data-iterator state saved together, atomically.

Layout: `<workdir>/checkpoints/<step>/{state,data,meta}`. The latest `keep` checkpoints are
preserved, plus the best one by a validation metric when checkpoints carry one. A
checkpoint that cannot be read (partially written, corrupted) is skipped on restore with a
warning, falling back to the previous good one; the skipped ones are renamed
`<step>.unreadable-<time>` so the resumed run can save those steps again.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


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
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(meta or {}),
        )
        return self.manager.save(step, args=args, metrics=metrics, force=force)

    def read_meta(self, step: int) -> dict | None:
        """The metadata saved with `step`, or None when it cannot be read."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is dealt with by restore()
            return None
        return dict(restored["meta"] or {})

    def restore(self, abstract_state: Any, step: int | None = None,
                check_meta: Callable[[str, dict], None] | None = None) -> tuple[int, Any, dict, dict] | None:
        """Restores the newest readable checkpoint (or `step`): (step, state, data, meta).

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` carrying shardings (from
        `jax.eval_shape`), so arrays come back placed. Returns None when there is none.
        `check_meta(path, meta)` runs on a checkpoint's metadata before its state is read and
        raises (CheckpointError) when the checkpoint was written for another configuration;
        that error stops the restore and nothing is moved or changed.
        """
        steps = [step] if step is not None else list(reversed(self.all_steps()))
        failures = []
        for s in steps:
            meta = self.read_meta(s) if check_meta is not None else None
            if meta is not None:
                check_meta(os.path.join(self.directory, str(s)), meta)
            try:
                restored = self.manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                msg = f"checkpoint step {s} in {self.directory} is unreadable ({type(e).__name__}: {e})"
                failures.append(msg)
                log.warning("%s; falling back to an earlier checkpoint", msg)
                continue
            if failures:
                log.warning("restored checkpoint step %d after skipping %d unreadable one(s)", s, len(failures))
                self._set_aside(steps[: steps.index(s)])
            return s, restored["state"], dict(restored["data"] or {}), dict(restored["meta"] or {})
        if failures:
            raise CheckpointError(
                "no checkpoint could be restored:\n  " + "\n  ".join(failures)
                + "\nMove the checkpoints folder away to start afresh."
            )
        return None

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
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete pytree, to restore into."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)), tree
    )
