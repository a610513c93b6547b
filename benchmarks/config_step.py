"""Compile time and step time of one config's training steps, exactly as the training loop runs them.

  python -m benchmarks.config_step --config configs/quickstart.py
  python -m benchmarks.config_step --config configs/mvtec_bottle.py --steps 20   # on a GPU

For every stage of the config's method (f-UNetGAN: the fused adversarial step, n_critic D
updates + 1 G update in one call, then the encoder step; GON/CAE: the training step) this
jits the stage's step function the way `anomaly_core.training.train_loop` does (state donated),
times trace+lower and XLA compilation apart, then runs `--steps` calls on one fixed random batch, blocking on each,
after `--warmup` untimed calls. Only the funetgan_jax / gon_jax step functions and
`init_state` are used, so the same command times an older checkout of the package too
(`PYTHONPATH=<old checkout>:. python -m benchmarks.config_step ...`), which is how the
before/after figures in docs/BENCHMARKS.md were taken.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_core.program.program import init_key
from benchmarks import common
from benchmarks.common import load_config


def stage_specs(config: Any, rng: np.random.Generator) -> tuple[Any, list[tuple[str, Any, dict, int]]]:
    """(init fn(key) -> state, [(stage name, step fn(state, batch, key), batch, images per step)])."""
    size, channels, b = config.model.image_size, config.model.channels, config.train.batch_size
    lo, hi = config.data.get("value_range", (0.0, 1.0))
    image = rng.uniform(lo, hi, size=(b, size, size, channels)).astype(np.float32)
    if config.method == "funetgan":
        from funetgan_jax import train_state as fstate
        from funetgan_jax import updates as fupdates

        n = config.train.n_critic
        stacked = np.broadcast_to(image, (n, *image.shape)) if n > 1 else image
        return (lambda r: fstate.init_state(config, r)), [
            (f"adversarial ({n} D + 1 G)", lambda s, x, k: fupdates.adversarial_step(config, s, x, k),
             {"image": jnp.asarray(stacked)}, n * b),
            ("encoder", lambda s, x, k: fupdates.encoder_step(config, s, x, k), {"image": jnp.asarray(image)}, b),
        ]
    from gon_jax import train as gt

    return (lambda r: gt.init_state(config, r)), [(config.model.kind, lambda s, x, k: gt.train_step(config, s, x, k),
                    {"image": jnp.asarray(image)}, b)]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True,
                   help="an ml_collections config file with an optional preset, e.g. configs/gon_quickstart.py:digits")
    p.add_argument("--steps", type=int, default=10, help="timed calls per stage (median taken)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after compilation")
    p.add_argument("--opt-level", type=int, default=None,
                   help="XLA's backend (LLVM) optimisation level, 0-3 (default: XLA's, as in the training loop)")
    p.add_argument("--label", default="", help="a name for this run in the output (e.g. the commit)")
    p.add_argument("--out", default="", help="output path without extension (default: "
                   "benchmarks/results/config_step_<config name>)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    # Real compile times: no persistent cache, even if the environment names one.
    jax.config.update("jax_enable_compilation_cache", False)
    config = load_config(args.config)
    name = os.path.splitext(os.path.basename(args.config.partition(":")[0]))[0] + (
        "_" + args.config.partition(":")[2] if ":" in args.config else "")
    out = args.out or os.path.join("benchmarks", "results", f"config_step_{name}")
    options = {"xla_backend_optimization_level": args.opt_level} if args.opt_level is not None else None

    init, specs = stage_specs(config, np.random.default_rng(0))
    print("[jax] compiling init ...", file=sys.stderr, flush=True)
    compiled_init = common.compile_jax(init, init_key(config.seed), compiler_options=options)
    state = jax.block_until_ready(compiled_init(init_key(config.seed)))
    rows = [{"stage": "init (all networks' parameters)", "label": args.label, "lower_s": compiled_init.lower_s,
             "compile_s": compiled_init.compile_s}]
    key = jax.random.key(1)
    for stage, fn, batch, images in specs:
        print(f"[jax] compiling {stage} ...", file=sys.stderr, flush=True)
        compiled = common.compile_jax(fn, state, batch, key, donate_argnums=0, compiler_options=options)
        times = []
        for i in range(args.warmup + args.steps):
            s0 = time.perf_counter()
            state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
            jax.block_until_ready((state, metrics))
            if i >= args.warmup:
                times.append(time.perf_counter() - s0)
        median = statistics.median(times)
        flops = common.flops_of(compiled)
        rows.append({"stage": stage, "label": args.label, "lower_s": compiled.lower_s, "compile_s": compiled.compile_s,
                     "median_ms": median * 1e3, "min_ms": min(times) * 1e3, "images_per_s": images / median,
                     "gflop_per_step": flops / 1e9 if flops else None})
    peak_mem, peak_kind = common.device_peak_memory()
    meta = {**common.machine_info(), "config": args.config, "label": args.label,
            "batch": config.train.batch_size, "steps_timed": args.steps, "warmup": args.warmup,
            "compiler_options": options or {}, "peak_memory_mb": round(peak_mem / 2**20),
            "peak_memory_kind": peak_kind}
    columns = [("stage", "stage"), ("label", "code"), ("lower_s", "trace+lower s"), ("compile_s", "compile s"),
               ("median_ms", "median ms"), ("min_ms", "min ms"), ("images_per_s", "images/s"),
               ("gflop_per_step", "GFLOP/step (XLA)")]
    notes = [f"Load average (1 min) at the start: {meta['load_average_1m']:.2f}; compiler options: "
             f"{options or 'XLA defaults'}; persistent compile cache off."]
    md = common.write_results(out, title=f"Training steps of {args.config}", command=common.command_line(),
                              meta=meta, rows=rows, columns=columns, notes=notes)
    print(md)
    return md


if __name__ == "__main__":
    main()
