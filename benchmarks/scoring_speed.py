"""Scoring speed on this machine for every method and scoring mode: batch-1 latency and batched images/s.

  python -m benchmarks.scoring_speed                 # the CPU presets at 64 px, batch 32
  python -m benchmarks.scoring_speed --profile       # + where f-UNetGAN's encoder-only time goes
  python -m benchmarks.scoring_speed --tiny          # tests: tiny networks, a few calls

Modes (each the config a user trains, with random-initialised parameters: the cost of a
score does not depend on the trained values):
  f-UNetGAN encoder-only: configs/quickstart.py with config.eval.refine_steps=0, i.e. G(E(x)),
      the residual map (kappa 0, critic weight 0: no critic pass), smoothing, the image score;
  f-UNetGAN refined: configs/quickstart.py as shipped (E(x) refined by 75 Adam steps on the
      latent, each a G forward and backward);
  GON gradient-encoded: configs/gon_quickstart.py:texture (conv GON ngf 16, BatchNorm 'context':
      each image encoded inside a batch with the B_train - 1 = 15 saved training images);
  CAE: configs/gon_quickstart.py:texture_cae.
Every mode is scored through `anomaly_core.program.program.jit_score`, the function evaluation and
`api.Detector` call (on a CPU the refined mode is its `host_score`: jitted pieces Python calls
in turn). The first call's time includes compilation and is listed apart; the timed calls
follow `--warmup` untimed ones and block on the scores.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

NAME = "scoring_speed"


def _funetgan(refine: bool, tiny: bool):
    from configs.funetgan_base import shrink
    from configs.quickstart import get_config

    config = get_config()
    if tiny:
        steps, lr = config.eval.refine_steps, config.eval.refine_lr
        shrink(config, image_size=32, width=2)
        config.eval.refine_steps, config.eval.refine_lr = steps, lr
    if not refine:
        config.eval.refine_steps = 0
    elif tiny:
        config.eval.refine_steps = 2
    return config


def _gon(preset: str, tiny: bool):
    from configs.gon_base import shrink_gon
    from configs.gon_quickstart import get_config

    config = get_config(preset)
    if tiny:
        shrink_gon(config)
    return config


def cases(tiny: bool = False) -> list[tuple[str, str, Any]]:
    """(method, scoring mode, config) of every method and scoring mode, at the CPU presets' sizes."""
    fun = [_funetgan(False, tiny), _funetgan(True, tiny)]
    gon, cae = _gon("texture", tiny), _gon("texture_cae", tiny)
    return [
        ("f-UNetGAN", "encoder-only G(E(x))", fun[0]),
        ("f-UNetGAN", f"refined ({fun[1].eval.refine_steps} Adam steps on z)", fun[1]),
        ("GON", f"gradient-encoded, BatchNorm '{gon.eval.bn_statistics}' (B_train {gon.train.batch_size})", gon),
        ("CAE", "reconstruction", cae),
    ]


def _images(config, n: int, rng: np.random.Generator) -> np.ndarray:
    s, c = config.data.image_size, config.model.channels
    lo, hi = config.data.get("value_range", (0.0, 1.0))
    return rng.uniform(lo, hi, (n, s, s, c)).astype(np.float32)


_STATES: dict[str, Any] = {}


def _state(config) -> Any:
    """common.initial_state(config), shared by the configs with the same networks (the
    f-UNetGAN modes differ only in config.eval): each initialisation compiles for seconds."""
    key = f"{config.method} {config.model} {config.train.batch_size}"
    if key not in _STATES:
        _STATES[key] = common.initial_state(config)
    return _STATES[key]


def score_callable(config) -> tuple[Callable[[Any], Any], Any, Any]:
    """(score(batch) -> outputs, state, mesh): the method's score function as evaluation and
    api.Detector run it, on the config's random-initialised state."""
    from anomaly_core.program import methods, program
    from anomaly_core.training import parallel

    method = methods.for_config(config)
    mesh = parallel.make_mesh()
    state = parallel.replicate(_state(config), mesh)
    score = program.jit_score(method, config, mesh)
    return (lambda batch: score(state, batch)), state, mesh


def measure_mode(config, *, batch: int, steps: int, warmup: int, rng: np.random.Generator) -> dict[str, Any]:
    """Batch-1 latency and batch-`batch` throughput of the config's score function."""
    import time

    from anomaly_core.training import parallel

    score, _, mesh = score_callable(config)
    row: dict[str, Any] = {"image_size": config.data.image_size, "batch": batch}
    with jax.set_mesh(mesh):
        for key, n in (("latency", 1), ("throughput", batch)):
            b = parallel.global_batch({"image": _images(config, n, rng)}, mesh)
            t0 = time.perf_counter()
            common.block(score(b))  # compiles this batch shape
            first = time.perf_counter() - t0
            timing = common.interleaved({"score": lambda b=b: common.block(score(b))}, steps=steps,
                                        warmup=warmup)["score"]
            if key == "latency":
                row.update(latency_ms=timing.median * 1e3, latency_min_ms=timing.min * 1e3, first_call_1_s=first)
            else:
                row.update(images_per_s=n / timing.median, ms_per_image=timing.median * 1e3 / n,
                           max_images_per_s=n / timing.min, first_call_batch_s=first)
    return row


def convolution_layouts(compiled: common.Compiled) -> str | None:
    """'n of m': how many of the compiled program's m convolutions have XLA:CPU's canonical
    layout (b01f_01io->b01f), the form its fast (Eigen) convolution runs; the others fall to
    a slow loop emitter (docs/BENCHMARKS.md, the quickstart step's story). None without HLO text."""
    import re

    try:
        text = compiled.executable.as_text()
    except Exception:  # noqa: BLE001 - not every backend gives the optimised HLO
        return None
    labels = re.findall(r"= \S+ convolution\(.*?dim_labels=([^,\s]+)", text)
    return f"{sum(d == 'b01f_01io->b01f' for d in labels)} of {len(labels)}"


def profile_encoder_only(config, *, batch: int, steps: int, warmup: int,
                         rng: np.random.Generator) -> list[dict[str, Any]]:
    """Where f-UNetGAN's encoder-only score spends its time: E forward, G forward, the map +
    smoothing + image score, the smoothing alone, and the whole score function, each compiled
    as its own program on the same batch (XLA's FLOP count per image beside each time)."""
    from anomaly_core.networks.smoothing import gaussian_smooth
    from funetgan_jax import scoring
    from funetgan_jax import networks as fnets
    from funetgan_jax import score_fns as fscore

    ev = config.eval
    state = _state(config)
    _, _, E = fnets.networks(config)
    x = jnp.asarray(_images(config, batch, rng))
    z = E.apply(state["e"], x, train=False)
    xr = fnets.generate_fn(config, state)(z)
    maps = jnp.mean(jnp.abs(xr - x), axis=-1)
    pieces = {
        "E forward (x -> z)": (lambda s, x: E.apply(s["e"], x, train=False), (state, x)),
        "G forward (z -> xr)": (lambda s, z: fnets.generate_fn(config, s)(z), (state, z)),
        "map + smoothing + image score": (
            lambda x, xr: scoring.anomaly_scores(x, xr, None, None, kappa=ev.kappa, smoothing_sigma=ev.smoothing_sigma,
                                                 image_score=ev.image_score), (x, xr)),
        f"smoothing alone (sigma {ev.smoothing_sigma})": (lambda m: gaussian_smooth(m, ev.smoothing_sigma), (maps,)),
        "whole score (funetgan_jax.score_fns.score_fn)": (fscore.score_fn(config), (state, {"image": x})),
    }
    compiled = {k: common.compile_jax(f, *a) for k, (f, a) in pieces.items()}
    timings = common.interleaved({k: (lambda c=compiled[k], a=pieces[k][1]: common.block(c(*a)))
                                  for k in pieces}, steps=steps, warmup=warmup)
    whole = timings["whole score (funetgan_jax.score_fns.score_fn)"].median
    rows = []
    for k, c in compiled.items():
        flops = common.flops_of(c)
        rows.append({"piece": k, "gflop_per_image": flops / batch / 1e9 if flops else None,
                     "median_ms": timings[k].median * 1e3, "min_ms": timings[k].min * 1e3,
                     "images_per_s": batch / timings[k].median, "share_of_whole": timings[k].median / whole,
                     "compile_s": round(c.lower_s + c.compile_s, 1), "canonical_convs": convolution_layouts(c)})
    return rows


def _add_arguments(p) -> None:
    p.add_argument("--tiny", action="store_true", help="tiny networks (tests): same code path, seconds not minutes")
    p.add_argument("--profile", action="store_true", help="also time the pieces of f-UNetGAN's encoder-only score")
    p.add_argument("--only", default="", help="comma-separated substrings of 'method: mode' to measure (e.g. 'CAE')")


def main(argv: list[str] | None = None) -> str:
    args = common.parse_args(__doc__.splitlines()[0], NAME, argv, default_batch=32, default_steps=10,
                             add_arguments=_add_arguments)
    rng = np.random.default_rng(0)
    rows = []
    for method, mode, config in cases(args.tiny):
        label = f"{method}: {mode}"
        if args.only and not any(p.strip().lower() in label.lower() for p in args.only.split(",") if p.strip()):
            continue
        print(f"[score] {label} ...", file=sys.stderr, flush=True)
        row = {"method": method, "mode": mode, **measure_mode(config, batch=args.batch, steps=args.steps,
                                                               warmup=args.warmup, rng=rng)}
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    meta = {**common.machine_info(), "batch": args.batch, "steps_timed": args.steps, "warmup": args.warmup,
            "tiny": args.tiny}
    columns = [("method", "method"), ("mode", "scoring mode"), ("image_size", "px"),
               ("latency_ms", "latency ms (batch 1)"), ("latency_min_ms", "min latency ms"),
               ("images_per_s", f"images/s (batch {args.batch})"), ("ms_per_image", "ms per image (batched)"),
               ("first_call_1_s", "first call s, batch 1 (compile incl.)"),
               ("first_call_batch_s", "first call s, batched (compile incl.)")]
    notes = [
        "Each mode through anomaly_core.program.program.jit_score (what evaluation and api.Detector call), "
        "random-initialised parameters at the config's widths; images/s = batch / median seconds per call.",
        "f-UNetGAN encoder-only: the quickstart with config.eval.refine_steps=0 (G(E(x)), residual map, "
        "smoothing, mean-map score; kappa 0 and critic weight 0, so no critic pass). Refined: the quickstart "
        "as shipped; on a CPU its host_score calls the jitted Adam update once per step from Python.",
        "GON 'context': B_train forward + backward + forward passes per image (lax.map over the images).",
        f"Load average (1 min) at the start: {meta['load_average_1m']:.2f}.",
    ]
    md = common.write_results(args.out, title="Scoring speed" + (" (tiny)" if args.tiny else ""),
                              command=common.command_line(), meta=meta, rows=rows, columns=columns, notes=notes)
    if args.profile:
        _, _, config = cases(args.tiny)[0]
        prof = profile_encoder_only(config, batch=args.batch, steps=args.steps, warmup=args.warmup, rng=rng)
        pcols = [("piece", "piece"), ("gflop_per_image", "GFLOP/image (XLA)"), ("median_ms", "median ms"),
                 ("min_ms", "min ms"), ("images_per_s", "images/s"), ("share_of_whole", "x the whole score"),
                 ("compile_s", "compile s"), ("canonical_convs", "convolutions in XLA:CPU's fast layout")]
        pmd = common.write_results(args.out + "_profile", title=f"f-UNetGAN encoder-only score, by piece "
                                   f"(batch {args.batch})", command=common.command_line(), meta=meta, rows=prof,
                                   columns=pcols, notes=["Each piece compiled as its own program on the same "
                                                         "inputs; timed alternately with the whole score."])
        md += "\n" + pmd
    print(md)
    return md


if __name__ == "__main__":
    main()
