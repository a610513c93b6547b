"""The input pipeline alone: batches/s of the demo data loader, host-only and placed on the
devices through anomaly_core.training.prefetch, against the batches/s the training step consumes.

  python -m benchmarks.input_pipeline --size reduced     # quickstart: 32 px, batch 8
  python -m benchmarks.input_pipeline --size full        # 128 px, batch 16 (f-UNetGAN base)

The demo dataset (scikit-image textures, written once to ~/.cache/funetgan_gon_jax/demo) goes
through the training pipeline the configs use: Grain, RandomResizedCrop + flip, value range,
cached decoded images. Step times, when benchmarks/results/train_steps.json exists (same
--size), give the batches/s the adversarial stage needs: n_critic batches per (n_critic D
steps + 1 G step).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from benchmarks import common

NAME = "input_pipeline"


def data_config(size: str, batch: int):
    from configs.quickstart import get_config

    config = get_config()  # demo source, 32 px, batch 8, n_critic 2
    if size == "full":
        config.data.image_size = config.model.image_size = 128
        config.train.n_critic = 5
    config.train.batch_size = batch
    return config


def _rate(next_batch, n: int, warmup: int) -> tuple[float, float]:
    """(batches/s over n batches after `warmup`, ms per batch)."""
    for _ in range(warmup):
        common.block(next_batch())
    t0 = time.perf_counter()
    for _ in range(n):
        common.block(next_batch())
    dt = time.perf_counter() - t0
    return n / dt, 1e3 * dt / n


def _needed_batches_per_s(size: str, batch: int, n_critic: int, path: str) -> tuple[float | None, str]:
    if not os.path.exists(path):
        return None, f"no {path}: run benchmarks.train_steps first for the comparison"
    with open(path) as f:
        results = json.load(f)
    meta = results["meta"]
    if meta.get("size") != size:
        return None, f"{path} holds size {meta.get('size')!r}, not {size!r}"
    jax_rows = {r["step"]: r for r in results["rows"] if r["framework"] == "JAX"}
    d = next((r for k, r in jax_rows.items() if k.startswith("f-UNetGAN D step")), None)
    g = jax_rows.get("f-UNetGAN G step")
    if d is None or g is None:
        return None, f"{path} has no f-UNetGAN D and G step times"
    step_s = (n_critic * d["median_ms"] + g["median_ms"]) / 1e3
    scale = meta.get("batch", batch) / batch  # a different batch in train_steps: per-image rate
    return n_critic / step_s * scale, (f"adversarial step = {n_critic} x D ({d['median_ms']:.0f} ms) + G "
                                       f"({g['median_ms']:.0f} ms) at batch {meta.get('batch')}, from {path}")


def main(argv: list[str] | None = None) -> str:
    from anomaly_core import data as data_lib
    from anomaly_core.training import parallel
    from anomaly_core.training.prefetch import prefetch_to_device

    args = common.parse_args(__doc__.splitlines()[0], NAME, argv, default_steps=200)
    batch = args.batch or (8 if args.size == "reduced" else 16)
    config = data_config(args.size, batch)
    mesh = parallel.make_mesh()
    make = lambda: data_lib.train_iterator(config.data, global_batch_size=batch, seed=0)  # noqa: E731
    # One pass over the training split first: the loader caches decoded images.
    n_train = len(data_lib.load_split(config.data, "train"))
    warmup = max(args.warmup, -(-n_train // batch))
    rows: list[dict[str, Any]] = []

    host = make()
    rate, ms = _rate(lambda: next(host), args.steps, warmup)
    rows.append({"stage": "Grain loader, host numpy", "batches_per_s": rate, "images_per_s": rate * batch,
                 "ms_per_batch": ms})
    source = make()
    with prefetch_to_device(source, mesh, [1] * (warmup + args.steps), size=2) as feed:
        rate, ms = _rate(lambda: next(feed), args.steps, warmup)
    rows.append({"stage": "+ prefetch_to_device (global jax.Arrays on the devices)", "batches_per_s": rate,
                 "images_per_s": rate * batch, "ms_per_batch": ms})

    needed, how = _needed_batches_per_s(args.size, batch, config.train.n_critic,
                                        os.path.join(os.path.dirname(args.out) or ".", "train_steps.json"))
    if needed:
        rows.append({"stage": f"needed by the f-UNetGAN adversarial step (n_critic {config.train.n_critic})",
                     "batches_per_s": needed, "images_per_s": needed * batch, "ms_per_batch": 1e3 / needed})
        for r in rows[:2]:
            r["headroom"] = r["batches_per_s"] / needed
    meta = {**common.machine_info(), "size": args.size, "batch": batch, "image_size": config.data.image_size,
            "train_images": n_train, "read_threads": config.data.read_threads,
            "num_workers": config.data.num_workers, "batches_timed": args.steps}
    columns = [("stage", "stage"), ("batches_per_s", "batches/s"), ("images_per_s", "images/s"),
               ("ms_per_batch", "ms/batch"), ("headroom", "x what the step needs")]
    notes = [f"Demo dataset, {n_train} training images, {config.data.image_size} px, augment "
             f"{config.data.augment}, Grain read threads {config.data.read_threads}, worker processes "
             f"{config.data.num_workers}; {warmup} warm-up batches (one pass: the decoded-image cache) first.",
             f"Step comparison: {how}.",
             f"Load average (1 min) at the start: {meta['load_average_1m']:.2f}."]
    md = common.write_results(args.out, title=f"Input pipeline, {args.size} size, batch {batch}",
                              command=common.command_line(), meta=meta, rows=rows, columns=columns, notes=notes)
    print(md)
    return md


if __name__ == "__main__":
    main()
