"""Anomaly-map throughput (images/s at batch 64) and latency (batch 1), f-UNetGAN and GON.

  python -m benchmarks.inference --size reduced          # CPU: width 8 at 64 and 32 px; GON ngf 16
  python -m benchmarks.inference --size full --steps 20  # GPU: width 64 at 128 and 64 px; GON ngf 124
  python -m benchmarks.inference --size full --precision bfloat16

f-UNetGAN: `funetgan_jax.score_fns.score_fn` (E, G, one D pass on [x, G(E(x))] giving both
feature maps, the Gaussian-smoothed map and the image score). GON: `gon_jax.scoring.
reconstruction_errors` with the configs' default BatchNorm mode 'context' (each test image
encoded inside a batch with B_train - 1 fixed training images: B_train forward and backward
passes per image) and the cheaper 'batch' mode (the test batch's own statistics). The conv
GON layout is 64x64 only. Random weights and images: the cost does not depend on the values.
"""
from __future__ import annotations

import sys
from typing import Any

import jax.numpy as jnp
import numpy as np

from benchmarks import common

NAME = "inference"


def funetgan_cases(size: str, precision: str) -> list[tuple[str, Any, Any]]:
    """(label, score fn, config) for each image size."""
    from configs.funetgan_base import base_config
    from funetgan_jax import score_fns as fscore

    cases = []
    for image_size in ((128, 64) if size == "full" else (64, 32)):
        config = base_config()
        config.data.image_size = config.model.image_size = image_size
        if size == "reduced":
            config.model.width = 8
            config.model.z_dim = 32
        config.model.dtype = precision
        cases.append((f"f-UNetGAN {image_size}x{image_size} (width {config.model.width})", fscore.score_fn(config),
                      config))
    return cases


def gon_cases(size: str, precision: str) -> list[tuple[str, Any, Any]]:
    from configs.gon_base import base_config
    from gon_jax.build import build_gon_model
    from gon_jax.scoring import reconstruction_errors

    config = base_config("conv_gon", "mvtec")
    if size == "reduced":
        config.model.ngf = 16
        config.train.batch_size = 8
    config.model.dtype = precision
    model = build_gon_model(config.model)
    b_train, s = config.train.batch_size, config.model.image_size
    context = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (b_train - 1, s, s, 3)), jnp.float32)
    cases = []
    for mode in ("context", "batch"):
        def score(state, batch, mode=mode):
            per_image, per_pixel, recon = reconstruction_errors(
                state["model"], batch["image"], model=model, bn_statistics=mode,
                context=context if mode == "context" else None,
                latent_batch_size=None if mode == "context" else b_train)
            return {"image_score": per_image, "anomaly_map": per_pixel, "reconstruction": recon}

        cases.append((f"GON 64x64 (ngf {config.model.ngf}), BatchNorm '{mode}' (B_train {b_train})", score, config))
    return cases


def main(argv: list[str] | None = None) -> str:
    args = common.parse_args(
        __doc__.splitlines()[0], NAME, argv, default_batch=64, default_steps=10,
        add_arguments=lambda p: p.add_argument("--only", default="", help="'funetgan' or 'gon': one method only"))
    batch = args.batch
    peak = common.measure_peak_flops(dtype=jnp.bfloat16 if args.precision == "bfloat16" else jnp.float32)
    cases = []
    if args.only in ("", "funetgan"):
        cases += funetgan_cases(args.size, args.precision)
    if args.only in ("", "gon"):
        cases += gon_cases(args.size, args.precision)
    rng = np.random.default_rng(0)
    rows = []
    for label, score, config in cases:
        state = common.initial_state(config)
        s, c = config.model.image_size, config.model.channels
        lo, hi = config.data.value_range
        row: dict[str, Any] = {"model": label}
        for key, n in (("throughput", batch), ("latency", 1)):
            x = {"image": jnp.asarray(rng.uniform(lo, hi, (n, s, s, c)), jnp.float32)}
            print(f"[jax] compiling {label}, batch {n} ...", file=sys.stderr, flush=True)
            compiled = common.compile_jax(score, state, x)
            timing = common.interleaved({"jax": lambda: common.block(compiled(state, x))}, steps=args.steps,
                                        warmup=args.warmup)["jax"]
            flops = common.flops_of(compiled)
            if flops and "'context'" in label:
                # XLA counts a loop body once; here the body (lax.map over the images) is one image.
                flops *= n
            if key == "throughput":
                row.update(batch=n, images_per_s=n / timing.median, batch_ms=timing.median * 1e3,
                           compile_s=round(compiled.lower_s + compiled.compile_s, 1),
                           gflop_per_image=flops / n / 1e9 if flops else None,
                           pct_of_peak=100 * flops / timing.median / peak if flops else None,
                           memory_mb=(common.static_memory_bytes(compiled) or 0) / 2**20)
            else:
                row.update(latency_ms=timing.median * 1e3, latency_min_ms=timing.min * 1e3)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    peak_mem, peak_kind = common.device_peak_memory()
    meta = {**common.machine_info(), "size": args.size, "precision": args.precision, "steps_timed": args.steps,
            "peak_matmul_gflops": round(peak / 1e9, 1), "peak_memory_mb": round(peak_mem / 2**20),
            "peak_memory_kind": peak_kind}
    columns = [("model", "model"), ("images_per_s", f"images/s (batch {batch})"), ("batch_ms", "ms per batch"),
               ("latency_ms", "latency ms (batch 1)"), ("latency_min_ms", "min latency ms"),
               ("compile_s", "compile s (batch)"), ("gflop_per_image", "GFLOP/image (XLA)"),
               ("pct_of_peak", "% of matmul peak"), ("memory_mb", "memory MB (batch)")]
    notes = [
        "Each anomaly map includes the Gaussian smoothing of the config (f-UNetGAN base config: "
        "sigma 4 px) and the image score.",
        "GON 'context': B_train forward+backward+forward passes per test image (lax.map over the batch, "
        "config.eval.chunk_size = 0), so it costs about a training step per image; 'batch' encodes the "
        "whole batch in one pass.",
        f"Matmul peak ({args.precision}, best of 10 on this device): {peak / 1e9:.1f} GFLOP/s. Memory: XLA's "
        f"memory analysis of the compiled batch; process-wide peak {peak_mem / 2**20:.0f} MB ({peak_kind}).",
        f"Load average (1 min) at the start: {meta['load_average_1m']:.2f}.",
    ]
    md = common.write_results(args.out, title=f"Inference, {args.size} size, {args.precision}",
                              command=common.command_line(), meta=meta, rows=rows, columns=columns, notes=notes)
    print(md)
    return md


if __name__ == "__main__":
    main()
