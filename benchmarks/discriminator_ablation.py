"""The paper's discriminator ablation in miniature: f-UNetGAN's four U-Net critics on real photographs.

  python -m benchmarks.discriminator_ablation --root=/data/mvtec --categories=transistor --seeds=0
  python -m benchmarks.discriminator_ablation --root=/data/mvtec --categories=transistor --tables-only

The paper compares its U-Net discriminator built from plain or residual convolution blocks,
with or without CBAM attention ({conv, residual} x {none, cbam}). Each of the four is trained
here with the MVTec configs' `:cpu` preset (everything else as in benchmarks.real_data, one
`launch.py` process per run, an empty compile cache each), and each trained run is scored
twice on the test split:
- refined: the preset's score, z = E(x) refined by the preset's Adam steps on ||G(z) - x||^2;
- encoder only: the paper's fast mapping, one E and one G pass (`--config.eval.refine_steps=0`),
  evaluated in a copy of the run's workdir (`<run>_encoder_only`), so the refined evaluation
  stays as it was.
One row per (critic, scoring): image AUROC, pixel AUROC, AUPRO beside the same run's
no-learning baseline, the training run's wall time and the scoring time per test image (its
evaluation's eval/timing.json). Tables: benchmarks/results/discriminator_ablation.{md,json};
the images stay in the run folders.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import real_data

CRITICS = (("conv", "none"), ("conv", "cbam"), ("residual", "none"), ("residual", "cbam"))
SCORINGS = ("refined", "encoder only")
COLUMNS = (
    ("d_block", "critic block"), ("d_attention", "attention"), ("scoring", "scoring"), ("seed", "seed"),
    ("image_auroc", "image AUROC"), ("delta_image_auroc", "vs baseline"),
    ("pixel_auroc", "pixel AUROC"), ("delta_pixel_auroc", "vs baseline"),
    ("pixel_aupro", "AUPRO"), ("delta_pixel_aupro", "vs baseline"),
    ("minutes", "training run (min)"), ("ms_per_image", "scoring ms/image"),
)


def critic_name(category: str, seed: int, block: str, attention: str) -> str:
    """The training run's folder name under --runs."""
    return f"funetgan_{category}_s{seed}_d-{block}-{attention}"


def critic_sets(block: str, attention: str) -> list[str]:
    """The overrides (without 'config.') that pick one critic."""
    return [f"model.d_block={block}", f"model.d_attention={attention}"]


def encoder_only_command(training: Sequence[str], workdir: str) -> list[str]:
    """The evaluation of a copied run with the encoder's latent as is: the training command
    `training` (argv) in `workdir`, in eval mode, refinement off."""
    argv = [a for a in training if not a.startswith("--workdir=")]
    return [*argv, f"--workdir={workdir}", "--mode=eval", "--config.eval.refine_steps=0"]


def encoder_only_row(trained: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates the trained run `trained` (a real_data.run_one row) again without refinement, in
    a copy of its workdir (made once; an evaluated copy is re-read), and returns its row."""
    src = trained["workdir"]
    workdir = src + "_encoder_only"
    metrics_path = os.path.join(workdir, "eval", "metrics.json")
    argv = encoder_only_command(shlex.split(trained["command"])[1:], workdir)
    if not os.path.exists(metrics_path) and not args.tables_only:
        if not os.path.exists(workdir):
            shutil.copytree(src, workdir, symlinks=True, ignore=shutil.ignore_patterns("eval", "events.out.*"))
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
        with open(workdir + ".log", "w") as f:
            f.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"python {shlex.join(argv)} exited {proc.returncode}:\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        print(f"encoder-only evaluation of {src}: {time.monotonic() - t0:.0f} s", flush=True)
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{metrics_path}: the encoder-only evaluation has not run (run without --tables-only)")
    with open(metrics_path) as f:
        metrics = json.load(f)
    timing_path = os.path.join(workdir, "eval", real_data.TIMING_FILE)
    timing = None
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)
    fields = {k: trained.get(k) for k in ("method", "category", "seed", "d_block", "d_attention", "minutes")}
    return {**real_data.row_from_metrics(metrics, timing, **fields), "scoring": "encoder only",
            "command": "python " + shlex.join(argv), "workdir": workdir}


def rows_of(category: str, seed: int, block: str, attention: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The refined and encoder-only rows of one critic (training it unless it finished before)."""
    trained = real_data.run_one("funetgan", category, seed, args, name=critic_name(category, seed, block, attention),
                                sets=critic_sets(block, attention))
    trained.update(d_block=block, d_attention=attention, scoring="refined")
    return [trained, encoder_only_row(trained, args)]


def write_tables(rows: list[dict[str, Any]], out: str, meta: dict[str, Any], cmd: str) -> str:
    """<out>.json and <out>.md (benchmarks.common.write_results)."""
    from benchmarks.common import write_results

    baselines = sorted({(r["category"], r["seed"], r.get("baseline_image_auroc"), r.get("baseline_pixel_auroc"),
                         r.get("baseline_pixel_aupro")) for r in rows}, key=str)
    notes = [
        "Each critic: configs/mvtec_bottle.py:cpu with --config.model.d_block and --config.model.d_attention "
        "(the preset's own critic is residual, none). 'vs baseline' = method - the no-learning baseline "
        "|x - mean training image| of the same run and split: " + "; ".join(
            f"{c} seed {s}: {i} / {p} / AUPRO {a}" for c, s, i, p, a in baselines) + ".",
        "refined: the preset's score (the encoder's latent refined by Adam steps); encoder only: one E and "
        "one G pass (--config.eval.refine_steps=0) on a copy of the same trained run.",
        "training run: the whole launch.py process (compilation from an empty cache, training, the refined "
        "evaluation); scoring ms/image: the test split's scoring time over its images (decoding and panels "
        "included).",
        "Pictures (not committed): " + "; ".join(f"{r['workdir']}/progress" for r in rows if r["scoring"] == "refined"),
    ]
    return write_results(out, title="f-UNetGAN's four U-Net critics on real photographs (CPU size)",
                         command=cmd, meta=meta, rows=rows, columns=COLUMNS, notes=notes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="folder holding the categories (MVTec AD layout)")
    p.add_argument("--categories", required=True, help="comma list, e.g. transistor")
    p.add_argument("--seeds", default="0", help="comma list of config.seed values")
    p.add_argument("--critics", default=",".join(f"{b}-{a}" for b, a in CRITICS),
                   help="comma list of BLOCK-ATTENTION, e.g. conv-none,residual-cbam")
    p.add_argument("--runs", default=os.path.join("runs", "discriminator_ablation"), help="folder of the run workdirs")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "discriminator_ablation"),
                   help="output path without extension: <out>.json and <out>.md")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run, without 'config.'")
    p.add_argument("--compile-cache", default="fresh",
                   help="'fresh' (default: an empty cache per training run) or a folder to share")
    p.add_argument("--tables-only", action="store_true", help="only re-read finished runs and write the tables")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be a comma list of integers, got {args.seeds!r}")
    args.categories = [c for c in args.categories.split(",") if c]
    critics = []
    for item in (c for c in args.critics.split(",") if c):
        block, _, attention = item.partition("-")
        if (block, attention) not in CRITICS:
            p.error(f"--critics: {item!r} is not one of {', '.join(f'{b}-{a}' for b, a in CRITICS)}")
        critics.append((block, attention))
    args.critics = critics
    if not args.tables_only and not os.path.isdir(args.root):
        p.error(f"--root={args.root!r} is not a folder")
    # what real_data.run_one reads
    args.config, args.rerun = {}, False
    return args


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.common import command_line, machine_info

    args = parse_args(argv)
    cmd, meta = command_line(), machine_info()
    rows: list[dict[str, Any]] = []
    for category in args.categories:
        for seed in args.seeds:
            for block, attention in args.critics:
                rows += rows_of(category, seed, block, attention, args)
                write_tables(rows, args.out, meta, cmd)
                refined, fast = rows[-2:]
                print(f"critic {block}/{attention} {category} seed {seed}: refined {refined['image_auroc']} / "
                      f"{refined['pixel_auroc']}, encoder only {fast['image_auroc']} / {fast['pixel_auroc']} "
                      f"(baseline {refined['baseline_image_auroc']} / {refined['baseline_pixel_auroc']})", flush=True)
    print(write_tables(rows, args.out, meta, cmd))


if __name__ == "__main__":
    main()
