"""Detection on real photographs: each method's CPU preset, end to end, beside the no-learning baseline.

  python -m benchmarks.real_data --root=/data/mvtec --categories=transistor --seeds=0,1
  python -m benchmarks.real_data --root=/data/mvtec --categories=transistor,bottle --methods=gon,cae
  python -m benchmarks.real_data --root=/data/mvtec --categories=transistor --tables-only   # re-read runs

For every (method, category, seed) it runs the user's command, one `launch.py` process:
  python launch.py --config=<METHODS[method]> --workdir=<runs>/<method>_<category>_s<seed>
      --config.data.root=<root> --config.data.categories=<category> --config.seed=<seed> [--set ...]
and reads the run's eval/metrics.json. One row per run: image AUROC, pixel AUROC and AUPRO of
the method and of the baseline |x - mean training image| scored in the same run (same split,
same smoothing), their differences, the run's wall time (compilation included) and whether
the XLA compile cache was empty when it started (--compile-cache=fresh gives every run its own
empty cache, so every wall time is a cold one), the test split's scoring time per image, and
where its pictures are (progress grids, eval panels). The table is rewritten after every run,
so a long benchmark that is stopped keeps the rows it finished. The images stay in the run
folders (--runs), never in the results.

The data is the user's: no image is copied. A category must be in MVTec AD's layout
(<root>/<category>/train/good, test/<defect>, ground_truth/<defect>).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

# method name -> the config (and preset) the benchmark runs: the MVTec configs' CPU presets
METHODS = {
    "funetgan": "configs/mvtec_bottle.py:cpu",
    "gon": "configs/gon_mvtec.py:cpu",
    "cae": "configs/cae_mvtec.py:cpu",
}
KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")
RUN_RECORD = ("wall_s", "minutes", "cache")  # what <runs>/<name>.run.json keeps of a run
TIMING_FILE = "timing.json"  # anomaly_core.evaluation.evaluation.TIMING_FILE (not imported: the benchmark needs no JAX)
COLUMNS = (
    ("method", "method"), ("category", "category"), ("seed", "seed"),
    ("image_auroc", "image AUROC"), ("baseline_image_auroc", "baseline"), ("delta_image_auroc", "delta"),
    ("pixel_auroc", "pixel AUROC"), ("baseline_pixel_auroc", "baseline"), ("delta_pixel_auroc", "delta"),
    ("pixel_aupro", "AUPRO"), ("baseline_pixel_aupro", "baseline"),
    ("minutes", "wall (min)"), ("cache", "compile cache"), ("ms_per_image", "scoring ms/image"),
)


def run_name(method: str, category: str, seed: int) -> str:
    return f"{method}_{category}_s{seed}"


def command(method: str, category: str, seed: int, root: str, workdir: str, sets: Sequence[str] = (),
            config: str | None = None) -> list[str]:
    """The launch.py command of one run (argv, without the interpreter)."""
    return ["launch.py", f"--config={config or METHODS[method]}", f"--workdir={workdir}",
            f"--config.data.root={root}", f"--config.data.categories={category}", f"--config.seed={seed}",
            *[f"--config.{s}" for s in sets]]


def row_from_metrics(metrics: dict[str, Any], timing: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """One table row from a run's eval/metrics.json: the method's and the baseline's image
    AUROC, pixel AUROC and AUPRO, their differences (method - baseline), and from its
    eval/timing.json (`timing`, optional) the scoring time per test image; `fields` (method,
    category, seed, wall time, ...) are kept as given."""
    scalars = metrics.get("scalars", {})
    base = metrics.get("baseline", {})
    row: dict[str, Any] = dict(fields)
    for key in KEYS:
        row[key] = scalars.get(key)
        row[f"baseline_{key}"] = base.get(key)
        if row[key] is not None and row[f"baseline_{key}"] is not None:
            row[f"delta_{key}"] = round(float(row[key]) - float(row[f"baseline_{key}"]), 4)
    seconds, images = (timing or {}).get("test_scoring_s"), (timing or {}).get("test_examples")
    row["ms_per_image"] = round(1000.0 * seconds / images, 1) if seconds is not None and images else None
    return row


def pictures(workdir: str) -> dict[str, Any]:
    """The run's pictures: the newest sample and reconstruction grids (progress/) and the
    eval panels folder."""
    grids = sorted(glob.glob(os.path.join(workdir, "progress", "*.png")), key=os.path.getmtime)
    newest: dict[str, str] = {}
    for path in grids:  # later files replace earlier ones per kind
        kind = os.path.basename(path).rsplit("_", 1)[-1].removesuffix(".png")
        newest[kind] = path
    return {"grids": newest, "panels": os.path.join(workdir, "eval", "panels")}


def cache_state(folder: str) -> str:
    """'empty' or 'warm (N entries)' for an XLA compile cache folder."""
    entries = len(os.listdir(folder)) if os.path.isdir(folder) else 0
    return "empty" if entries == 0 else f"warm ({entries} entries)"


def run_one(method: str, category: str, seed: int, args: argparse.Namespace, name: str | None = None,
            sets: Sequence[str] = ()) -> dict[str, Any]:
    """Trains and evaluates one run (unless it finished before and --rerun is off, then its
    metrics are re-read) and returns its row. `name`: the run's folder under args.runs
    (default `run_name`); `sets`: overrides of this run on top of args.set."""
    name = name or run_name(method, category, seed)
    workdir = os.path.join(args.runs, name)
    metrics_path = os.path.join(workdir, "eval", "metrics.json")
    argv = command(method, category, seed, args.root, workdir, [*args.set, *sets], args.config.get(method))
    fields: dict[str, Any] = {"method": method, "category": category, "seed": seed,
                              "command": "python " + shlex.join(argv)}
    record_path = os.path.join(args.runs, name + ".run.json")  # how the run went: wall time, cache
    if args.tables_only or (os.path.exists(metrics_path) and not args.rerun):
        fields.update(_run_record(record_path))
    else:
        if os.path.exists(workdir):  # launch.py would resume it: neither a fresh run nor a cold wall time
            raise FileExistsError(f"{workdir} exists: move it away to train it again (the benchmark deletes no run)")
        env = dict(os.environ)
        if args.compile_cache == "fresh":
            cache = tempfile.mkdtemp(prefix=f"xla_{name}_")
        else:
            cache = args.compile_cache or env.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
                os.path.expanduser("~"), ".cache", "funetgan_gon_jax", "xla")
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        fields["cache"] = cache_state(cache)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
        wall = time.monotonic() - t0
        os.makedirs(args.runs, exist_ok=True)
        with open(os.path.join(args.runs, name + ".log"), "w") as f:
            f.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{fields['command']} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        fields.update(wall_s=round(wall, 1), minutes=round(wall / 60, 1))
        with open(record_path, "w") as f:
            json.dump({k: fields[k] for k in RUN_RECORD}, f)
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{metrics_path}: the run has no evaluation (run it without --tables-only)")
    with open(metrics_path) as f:
        metrics = json.load(f)
    timing_path = os.path.join(workdir, "eval", TIMING_FILE)
    timing = None
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)
    return {**row_from_metrics(metrics, timing, **fields), "workdir": workdir, "pictures": pictures(workdir)}


def _run_record(path: str) -> dict[str, Any]:
    """What the benchmark recorded when it ran the run (<runs>/<name>.run.json), or {}."""
    try:
        with open(path) as f:
            return {k: v for k, v in json.load(f).items() if k in RUN_RECORD}
    except (OSError, ValueError):
        return {}


def write_tables(rows: list[dict[str, Any]], out: str, meta: dict[str, Any], cmd: str) -> str:
    """<out>.json and <out>.md (benchmarks.common.write_results)."""
    from benchmarks.common import write_results

    notes = [
        "delta = method - baseline; the baseline is |x - mean training image|, smoothed like the method's "
        "map, scored in the same run on the same test split.",
        "wall time: the whole launch.py process (imports, data, compilation, training, evaluation).",
        "Pictures (not committed: the images are the dataset's): " + "; ".join(
            f"{r['method']}/{r['category']}/s{r['seed']}: {r['workdir']}/progress, {r['pictures']['panels']}"
            for r in rows),
    ]
    return write_results(out, title="Real photographs: each method's CPU preset beside the no-learning baseline",
                         command=cmd, meta=meta, rows=rows, columns=COLUMNS, notes=notes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="folder holding the categories (MVTec AD layout)")
    p.add_argument("--categories", required=True, help="comma list, e.g. transistor,bottle")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--seeds", default="0", help="comma list of config.seed values")
    p.add_argument("--runs", default=os.path.join("runs", "real_data"), help="folder of the run workdirs")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "real_data"),
                   help="output path without extension: <out>.json and <out>.md")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run, without 'config.' (e.g. train.generator_steps=800)")
    p.add_argument("--config", action="append", default=[], metavar="METHOD=FILE[:PRESET]",
                   help="run METHOD with another config than its CPU preset")
    p.add_argument("--compile-cache", default="fresh",
                   help="'fresh' (default: an empty cache per run, cold wall times) or a folder to share")
    p.add_argument("--rerun", action="store_true",
                   help="train again runs that already have an evaluation (move their workdirs away first)")
    p.add_argument("--tables-only", action="store_true", help="only re-read finished runs and write the tables")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be a comma list of integers, got {args.seeds!r}")
    args.categories = [c for c in args.categories.split(",") if c]
    configs = {}
    for item in args.config:
        method, sep, spec = item.partition("=")
        if not sep or method not in METHODS or not spec:
            p.error(f"--config={item!r}: expected METHOD=FILE[:PRESET] with METHOD one of {', '.join(METHODS)}")
        configs[method] = spec
    args.config = configs
    if not args.tables_only and not os.path.isdir(args.root):
        p.error(f"--root={args.root!r} is not a folder")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.common import command_line, machine_info

    args = parse_args(argv)
    cmd = command_line()
    meta = machine_info()
    rows: list[dict[str, Any]] = []
    for category in args.categories:
        for method in args.methods:
            for seed in args.seeds:
                row = run_one(method, category, seed, args)
                rows.append(row)
                write_tables(rows, args.out, meta, cmd)
                print(f"{method} {category} seed {seed}: image AUROC {row['image_auroc']} (baseline "
                      f"{row['baseline_image_auroc']}), pixel AUROC {row['pixel_auroc']} (baseline "
                      f"{row['baseline_pixel_auroc']}), {row.get('minutes')} min", flush=True)
    print(write_tables(rows, args.out, meta, cmd))


if __name__ == "__main__":
    main()
