"""What verified checkpoints cost: SHA-256 digests of every array at save, checked at restore.

  python -m benchmarks.checkpoint_digests                # quickstart and full-size f-UNetGAN states

For each config's train state (parameters, batch statistics, optimiser moments; random
values of the real shapes and dtypes, since hashing cost does not depend on them) it times,
on this machine: the digests alone (`checkpointing.state_digests`), a synchronous save with
and without them, and a restore with and without verifying them. Each figure is the median of
`--steps` repetitions into a fresh folder under `--tmp`. Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any
from unittest import mock

import jax
import numpy as np

from anomaly_core.program import methods, program
from anomaly_core.training import checkpointing, parallel

CONFIGS = (("quickstart (64x64, width 4)", "configs/quickstart.py", ""),
           ("mvtec_bottle (128x128, width 64, full size)", "configs/mvtec_bottle.py", ""))


def _state(config_path: str, preset: str, mesh) -> Any:
    from ml_collections import config_flags  # noqa: F401 - loads the config file as launch.py does
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(preset) if preset else module.get_config()
    method = methods.for_config(config)
    shapes = program.abstract_state(method, config, mesh)
    rng = np.random.default_rng(0)
    host = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    return parallel.replicate(host, mesh)


def _median(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(state: Any, tmp: str, steps: int) -> dict[str, float]:
    abstract = checkpointing.abstract_like(state)
    counter = iter(range(10**6))

    def save(with_digests: bool) -> None:
        folder = os.path.join(tmp, f"run{next(counter)}")
        ckpt = checkpointing.Checkpointer(folder, async_save=False)
        if with_digests:
            ckpt.save(1, state, data_state={"next_index": 1})
        else:
            with mock.patch.object(checkpointing, "state_digests", lambda s: {}), \
                    mock.patch.object(checkpointing, "data_digest", lambda d: None):
                ckpt.save(1, state, data_state={"next_index": 1})
        ckpt.wait()
        ckpt.close()
        shutil.rmtree(folder)

    src = os.path.join(tmp, "restore_src")
    ckpt = checkpointing.Checkpointer(src, async_save=False)
    ckpt.save(1, state, data_state={"next_index": 1})
    ckpt.wait()

    def restore(verify: bool) -> None:
        if verify:
            ckpt.restore(abstract)
        else:
            with mock.patch.object(checkpointing, "verify_digests", lambda *a: None):
                ckpt.restore(abstract)

    out = {
        "bytes": int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(jax.device_get(state)))),
        "digests_s": _median(lambda: checkpointing.state_digests(state), steps),
        "save_with_digests_s": _median(lambda: save(True), steps),
        "save_without_digests_s": _median(lambda: save(False), steps),
        "restore_verified_s": _median(lambda: restore(True), steps),
        "restore_unverified_s": _median(lambda: restore(False), steps),
    }
    ckpt.close()
    return out


COLUMNS = (("config", "train state"), ("MiB", "size (MiB)"), ("digests_s", "digests (s)"),
           ("save_with_digests_s", "save with digests (s)"), ("save_without_digests_s", "save without (s)"),
           ("restore_verified_s", "restore verified (s)"), ("restore_unverified_s", "restore unverified (s)"))


def write_report(rows: list[dict], meta: dict, out: str) -> None:
    """<out>.json and <out>.md (benchmarks.common.write_results)."""
    from benchmarks import common

    rows = [{**r, "MiB": round(r["bytes"] / 2**20, 1)} for r in rows]
    common.write_results(out, title="Checkpoint digests: what verified checkpoints cost",
                         command="python -m benchmarks.checkpoint_digests", meta=meta, rows=rows, columns=COLUMNS,
                         notes=["medians; each save is synchronous into a fresh folder, each restore reads one "
                                "checkpoint"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tmp", default=tempfile.gettempdir())
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "checkpoint_digests"))
    args = p.parse_args(argv)
    mesh = parallel.make_mesh()
    rows = []
    for label, path, preset in CONFIGS:
        tmp = tempfile.mkdtemp(dir=args.tmp)
        try:
            rows.append({"config": label, **measure(_state(path, preset, mesh), tmp, args.steps)})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(rows[-1]), flush=True)
    write_report(rows, {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                        "repetitions": args.steps}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
