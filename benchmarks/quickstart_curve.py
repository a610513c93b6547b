"""Detection quality of the f-UNetGAN quickstart against training budget (issue 12's curve).

  python -m benchmarks.quickstart_curve --root=runs/curve          # 4 runs, ~40 min on 2 cores
  python -m benchmarks.quickstart_curve --root=runs/curve --budgets=300

Each budget B runs the README's quickstart command (configs/quickstart.py) in its own workdir
with B generator updates and r B encoder updates (--encoder-ratio r; the quickstart is
B = 300, r = 1; the curve recorded in docs/TRAINING.md section 6 used r = 2), as a separate
`launch.py` process, and records its wall time (compilation included; the compile cache is
whatever the machine has, reported per run) and its metrics beside the no-learning baseline.
Writes <out>.json, <out>.md and <out>.png (AUROC against minutes of wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def run_budget(root: str, budget: int, extra: list[str], encoder_ratio: float = 1.0) -> dict:
    workdir = os.path.join(root, f"g{budget}")
    encoder_steps = max(int(round(encoder_ratio * budget)), 1)
    cmd = [sys.executable, "launch.py", "--config=configs/quickstart.py", f"--workdir={workdir}",
           f"--config.train.generator_steps={budget}", f"--config.train.encoder_steps={encoder_steps}",
           f"--config.train.checkpoint_every={max(budget // 2, 1)}", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    with open(os.path.join(root, f"g{budget}.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    return {"generator_steps": budget, "encoder_steps": encoder_steps, "wall_s": round(wall, 1),
            "command": " ".join(cmd[1:]),
            **{k: metrics["scalars"].get(k) for k in KEYS},
            **{f"baseline_{k}": metrics.get("baseline", {}).get(k) for k in KEYS}}


def plot(rows: list[dict], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    minutes = [r["wall_s"] / 60 for r in rows]
    for key, style in (("image_auroc", "o-"), ("pixel_auroc", "s-")):
        ax.plot(minutes, [r[key] for r in rows], style, label=f"f-UNetGAN {key.replace('_', ' ')}")
        ax.axhline(rows[0][f"baseline_{key}"], linestyle=":", color=ax.lines[-1].get_color(),
                   label=f"no-learning baseline, {key.replace('_', ' ')}")
    ax.axhline(0.9, color="grey", linewidth=0.8)
    for r, m in zip(rows, minutes):
        ax.annotate(f"{r['generator_steps']}+{r['encoder_steps']}", (m, r["image_auroc"]), fontsize=7)
    ax.set_xlabel("wall time of the run (minutes, 2-core CPU, compilation included)")
    ax.set_ylabel("AUROC (demo test split)")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


COLUMNS = (("updates", "generator + encoder updates"), ("minutes", "wall (min)"), ("image_auroc", "image AUROC"),
           ("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AUPRO"), ("baseline_image_auroc", "baseline image AUROC"),
           ("baseline_pixel_auroc", "baseline pixel AUROC"), ("baseline_pixel_aupro", "baseline AUPRO"),
           ("compile_cache_entries_before", "compile cache entries before"))


def write_report(rows: list[dict], meta: dict, out: str, budgets: str) -> None:
    """<out>.json, <out>.md (benchmarks.common.write_results) and <out>.png."""
    from benchmarks import common

    table = [{**r, "updates": f"{r['generator_steps']} + {r['encoder_steps']}", "minutes": round(r["wall_s"] / 60, 1)}
             for r in rows]
    common.write_results(out, title="f-UNetGAN quickstart: AUROC against training budget",
                         command=f"python -m benchmarks.quickstart_curve --budgets={budgets}", meta=meta, rows=table,
                         columns=COLUMNS)
    plot(rows, out + ".png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/curve", help="folder for the runs' workdirs and logs")
    p.add_argument("--budgets", default="100,300,750,1500", help="generator updates per run (comma list)")
    p.add_argument("--encoder-ratio", type=float, default=1.0,
                   help="encoder updates per generator update (the quickstart's 300 + 300: 1)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "quickstart_curve"))
    args, extra = p.parse_known_args(argv)
    os.makedirs(args.root, exist_ok=True)
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                           os.path.join(os.path.expanduser("~"), ".cache", "funetgan_gon_jax", "xla"))
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        cache_files = len(os.listdir(cache)) if os.path.isdir(cache) else 0
        rows.append({**run_budget(args.root, budget, extra, args.encoder_ratio), "compile_cache_entries_before": cache_files})
        print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "code commit": commit or "unknown (not a git checkout)", "evaluated": "each run's selected checkpoint"}
    if extra:
        meta["extra settings"] = " ".join(extra)
    write_report(rows, meta, args.out, args.budgets + (" " + " ".join(extra) if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
