"""The full-size measurements that matter most, in one command with a time budget per part.

  python -m benchmarks.gpu_suite                       # a GPU machine: about 8 minutes in all
  python -m benchmarks.gpu_suite --tiny                # tiny sizes on a CPU (the test runs this)
  python -m benchmarks.gpu_suite --parts score_funetgan_float32,loop_step --budget loop_step=200

Each part is one of the existing benchmark scripts (benchmarks.train_steps, .inference,
.config_step) run in its own process with its own wall-clock budget, compilation included:
a part that runs over is stopped and recorded as cut short, and the next part starts, so a
slow part cannot starve the rest. The suite as a whole stops starting parts when `--total`
seconds are spent. After every part the suite rewrites <out>.json (every part's status,
wall time, budget and, where it finished, its rows and meta) and <out>.md (a table of the
parts, then each finished part's own table); each part also leaves <out>_<part>.{json,md,log}.

This process never initialises a JAX backend itself (on a GPU that would reserve memory
the parts need); each part is a fresh process, so its peak memory is its own.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

NAME = "gpu_suite"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the parts run from the repository root
DEFAULT_TOTAL_S = 480.0  # the 8 minutes, compilation included


@dataclasses.dataclass(frozen=True)
class Part:
    """One measurement: `python -m <module> <args>` with a wall-clock budget in seconds."""

    name: str
    what: str
    module: str
    args: tuple[str, ...]
    tiny_args: tuple[str, ...]
    budget_s: float
    needs_torch: bool = False


_FULL = ("--size", "full", "--steps", "10", "--warmup", "2")
_TINY = ("--size", "reduced", "--batch", "2", "--steps", "1", "--warmup", "0")

# Budgets add up to 465 s of the 480: the part processes' own start-up (imports, CUDA) counts in them.
PARTS: tuple[Part, ...] = (
    Part("device", "matmul peak FLOP/s (float32, bfloat16) that the other parts' '% of peak' use; device",
         "benchmarks.gpu_suite", ("--device-part",), ("--device-part", "--tiny"), 15.0),
    Part("train_d", "f-UNetGAN D step (2 GPs + Mixup), JAX vs PyTorch, width 64, 128 px, batch 16, float32",
         "benchmarks.train_steps", (*_FULL, "--batch", "16", "--only", "f-UNetGAN D step"),
         (*_TINY, "--only", "f-UNetGAN D step"),
         100.0, needs_torch=True),
    Part("train_g_e", "f-UNetGAN G and E steps, JAX vs PyTorch, width 64, 128 px, batch 16, float32",
         "benchmarks.train_steps", (*_FULL, "--batch", "16", "--only", "f-UNetGAN G step,f-UNetGAN E step"),
         (*_TINY, "--only", "f-UNetGAN G step,f-UNetGAN E step"), 70.0, needs_torch=True),
    Part("score_funetgan_float32", "f-UNetGAN scoring images/s (batch 64) and latency (batch 1) at 128 and 64 px",
         "benchmarks.inference", (*_FULL, "--only", "funetgan"), (*_TINY, "--only", "funetgan"), 55.0),
    Part("score_funetgan_bfloat16", "the same in bfloat16",
         "benchmarks.inference", (*_FULL, "--only", "funetgan", "--precision", "bfloat16"),
         (*_TINY, "--only", "funetgan", "--precision", "bfloat16"), 55.0),
    Part("score_gon_float32", "GON gradient-encoded scoring at 64 px, BatchNorm 'context' and 'batch', ngf 124",
         "benchmarks.inference", (*_FULL, "--only", "gon"), (*_TINY, "--only", "gon"), 40.0),
    Part("score_gon_bfloat16", "the same in bfloat16",
         "benchmarks.inference", (*_FULL, "--only", "gon", "--precision", "bfloat16"),
         (*_TINY, "--only", "gon", "--precision", "bfloat16"), 40.0),
    Part("loop_step", "the training loop's own steps of configs/mvtec_bottle.py (fused 5 D + 1 G, encoder step)",
         "benchmarks.config_step", ("--config", "configs/mvtec_bottle.py", "--steps", "10"),
         ("--config", "configs/mvtec_bottle.py:tiny", "--steps", "1", "--warmup", "0"), 90.0),
)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def part_command(part: Part, out: str, tiny: bool) -> list[str]:
    """The part's command line, writing <out>_<part>.{json,md}."""
    args = part.tiny_args if tiny else part.args
    return [sys.executable, "-m", part.module, *args, "--out", f"{out}_{part.name}"]


def run_part(part: Part, out: str, *, tiny: bool, timeout_s: float) -> dict[str, Any]:
    """Runs one part in its own process group, stopped after `timeout_s`; its record."""
    cmd = part_command(part, out, tiny)
    record: dict[str, Any] = {"part": part.name, "what": part.what, "command": "python " + shlex.join(cmd[1:]),
                              "budget_s": part.budget_s, "timeout_s": round(timeout_s, 1),
                              "log": f"{out}_{part.name}.log"}
    env = dict(os.environ)
    # Each part measures its own peak; JAX and PyTorch share the GPU in the train_steps parts.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    with open(record["log"], "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group (it may have started workers)
            proc.wait()
            rc = None
    wall = time.perf_counter() - t0
    record["wall_s"] = round(wall, 1)
    if rc is None:
        record["status"] = f"cut short at {wall:.0f} s (budget {timeout_s:.0f} s)"
        record["log_tail"] = _tail(record["log"])  # how far it got (the scripts print each stage and row)
    elif rc != 0:
        record["status"] = f"failed (exit code {rc}; see the log)"
        record["log_tail"] = _tail(record["log"])
    else:
        record["status"] = "done"
        try:
            with open(f"{out}_{part.name}.json") as f:
                saved = json.load(f)
            record.update(rows=saved.get("rows", []), meta=saved.get("meta", {}), title=saved.get("title", ""))
        except (OSError, ValueError) as e:
            record["status"] = f"failed (finished but wrote no results: {e})"
    return record


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _peak_mb(record: dict[str, Any]) -> Any:
    meta = record.get("meta") or {}
    return meta.get("peak_memory_mb")


def write_suite(out: str, *, command: str, meta: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """<out>.json (every part's record) and <out>.md (the parts table, then each finished part's own markdown)."""
    from benchmarks.common import markdown_table

    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump({"title": "GPU suite", "command": command, "meta": meta, "parts": list(records)}, f, indent=2,
                  default=str)
    rows = [{"part": r["part"], "status": r["status"], "wall_s": r.get("wall_s"), "budget_s": r["budget_s"],
             "peak_mb": _peak_mb(r), "what": r["what"]} for r in records]
    table = markdown_table(rows, [("part", "part"), ("status", "status"), ("wall_s", "wall s"),
                                  ("budget_s", "budget s"), ("peak_mb", "process peak memory MB"),
                                  ("what", "measures")])
    parts_md = []
    for r in records:
        if r["status"] == "done" and os.path.exists(f"{out}_{r['part']}.md"):
            with open(f"{out}_{r['part']}.md") as f:
                parts_md.append(f.read().replace("### ", "#### ", 1))
    machine = ", ".join(f"{k} {v}" for k, v in meta.items())
    md = "\n".join([f"### GPU suite{' (tiny)' if meta.get('tiny') else ''}", "", f"`{command}`", "",
                    f"Machine: {machine}", "", table, "", *parts_md]).rstrip() + "\n"
    with open(out + ".md", "w") as f:
        f.write(md)
    return md


def _budgets(specs: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """'--budget 30' (every part) and '--budget part=30' (one part) -> {part: seconds}."""
    budgets: dict[str, float] = {}
    for spec in specs:
        name, _, value = spec.rpartition("=")
        if name and name not in names:
            raise SystemExit(f"--budget: no part {name!r} (parts: {', '.join(names)})")
        for n in ([name] if name else names):
            budgets[n] = float(value)
    return budgets


def device_part(out: str, tiny: bool) -> str:
    """The 'device' part: matmul peak FLOP/s in float32 and bfloat16 on the first device."""
    import jax
    import jax.numpy as jnp

    from benchmarks import common

    jax.config.update("jax_enable_compilation_cache", False)
    n = 256 if tiny else 0
    rows = [{"dtype": name, "peak_matmul_gflops": common.measure_peak_flops(n=n, dtype=dtype) / 1e9}
            for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))]
    peak_mem, kind = common.device_peak_memory()
    meta = {**common.machine_info(), "matmul_n": n or "2048 (CPU) / 8192 (accelerators)",
            "peak_memory_mb": round(peak_mem / 2**20), "peak_memory_kind": kind}
    return common.write_results(out, title="Device: matmul peak", command=common.command_line(), meta=meta,
                                rows=rows, columns=[("dtype", "dtype"), ("peak_matmul_gflops", "matmul GFLOP/s")],
                                notes=["Best of 10 square matmuls (bfloat16 accumulates in float32)."])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    names = [p.name for p in PARTS]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("benchmarks", "results", NAME),
                   help="output path without extension: <out>.json, <out>.md and <out>_<part>.*")
    p.add_argument("--tiny", action="store_true", help="tiny sizes and one timed call per step (a CPU, tests)")
    p.add_argument("--parts", default="", help=f"comma-separated parts to run (default: all: {', '.join(names)})")
    p.add_argument("--budget", action="append", default=[],
                   help="seconds for every part ('30') or one part ('loop_step=200'); may repeat")
    p.add_argument("--total", type=float, default=DEFAULT_TOTAL_S,
                   help="the whole suite's wall-clock budget: no part runs past it")
    p.add_argument("--device-part", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = os.path.abspath(args.out)  # the parts run from the repository root
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if args.device_part:
        print(device_part(args.out, args.tiny))
        return {}
    chosen = [n.strip() for n in args.parts.split(",") if n.strip()] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        p.error(f"--parts: unknown {unknown} (parts: {', '.join(names)})")
    budgets = _budgets(args.budget, names)
    command = "python -m benchmarks.gpu_suite " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    meta = {"host": platform.node(), "python": platform.python_version(), "tiny": args.tiny,
            "total_budget_s": args.total, "torch_installed": torch_available()}
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for part in PARTS:
        if part.name not in chosen:
            continue
        budget = budgets.get(part.name, part.budget_s)
        part = dataclasses.replace(part, budget_s=budget)
        left = args.total - (time.perf_counter() - start)
        record: dict[str, Any]
        if part.needs_torch and not torch_available():
            record = {"part": part.name, "what": part.what, "budget_s": budget,
                      "status": "skipped: torch not installed (pip install -e '.[torch]')"}
        elif left <= 0:
            record = {"part": part.name, "what": part.what, "budget_s": budget,
                      "status": f"not started: the suite's {args.total:.0f} s were spent"}
        else:
            print(f"[suite] {part.name}: up to {min(budget, left):.0f} s ...", file=sys.stderr, flush=True)
            record = run_part(part, args.out, tiny=args.tiny, timeout_s=min(budget, left))
        records.append(record)
        print(f"[suite] {part.name}: {record['status']}", file=sys.stderr, flush=True)
        meta["wall_s"] = round(time.perf_counter() - start, 1)
        write_suite(args.out, command=command, meta=meta, records=records)
    print(open(args.out + ".md").read() if records else "no parts chosen")
    return {"meta": meta, "parts": records}


if __name__ == "__main__":
    main()
