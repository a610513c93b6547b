"""Timing, FLOP and memory helpers shared by the benchmark scripts, and their JSON/markdown output.

Rules every figure here follows:
- compile time is measured on its own (`jax.jit(f).lower(...)` then `.compile()`) and never
  enters a step time; the persistent XLA cache is off unless a script is told otherwise, so
  the compile time is a real one;
- every timed call blocks on its results (`jax.block_until_ready`; PyTorch on a GPU:
  `torch.cuda.synchronize`), after `warmup` untimed calls; the figure is the median of N;
- contenders are timed alternately in short blocks (`interleaved`): on a shared machine the
  load changes from second to second, and alternating exposes JAX and PyTorch to the same load;
- FLOPs per call come from XLA's cost analysis of the compiled program; the peak FLOP/s a
  fraction is quoted against is measured by a large matmul on the same device, not taken
  from a datasheet;
- memory: XLA's static memory analysis of the compiled step (arguments + outputs + scratch,
  minus donated aliases), and the device's peak bytes in use where the backend reports it
  (`device.memory_stats()`, GPU/TPU); on a CPU, the process's peak resident set size,
  labelled as such (it covers the whole process: both frameworks, Python, the compiler).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

SIZES = ("full", "reduced")
PRECISIONS = ("float32", "bfloat16")


def parse_args(description: str, name: str, argv: Sequence[str] | None = None,
               default_batch: int | None = None, default_steps: int = 10,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The flags every benchmark script takes: --size, --batch, --steps, --warmup, --precision, --out,
    --compile-cache, plus the script's own (`add_arguments`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=SIZES, default="reduced",
                   help="'full': the paper-sized networks (use on a GPU); 'reduced': narrow networks "
                        "and small images for a CPU")
    p.add_argument("--batch", type=int, default=default_batch,
                   help="batch size (default: the script's, per size)")
    p.add_argument("--steps", type=int, default=default_steps, help="timed calls per measurement (median taken)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (after compilation)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="compute dtype: JAX config.model.dtype; PyTorch autocast for bfloat16")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", name),
                   help="output path without extension: writes <out>.json and <out>.md")
    p.add_argument("--compile-cache", default="",
                   help="persistent XLA compile cache folder (default: off, so compile times are real)")
    if add_arguments is not None:
        add_arguments(p)
    args = p.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    else:
        # An inherited JAX_COMPILATION_CACHE_DIR would turn compile times into cache reads.
        jax.config.update("jax_enable_compilation_cache", False)
    return args


@dataclasses.dataclass
class Compiled:
    """A compiled JAX program with its trace+lower and XLA compile times (seconds)."""

    executable: Any
    lower_s: float
    compile_s: float

    def __call__(self, *args: Any) -> Any:
        return self.executable(*args)


def compile_jax(fn: Callable[..., Any], *args: Any, donate_argnums: int | tuple[int, ...] = (),
                compiler_options: dict[str, Any] | None = None) -> Compiled:
    """jax.jit(fn) lowered and compiled for `args`; lowering (tracing) and compilation timed apart."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn, donate_argnums=donate_argnums, compiler_options=compiler_options).lower(*args)
    t1 = time.perf_counter()
    executable = lowered.compile()
    t2 = time.perf_counter()
    return Compiled(executable, t1 - t0, t2 - t1)


def flops_of(compiled: Compiled | Any) -> float | None:
    """FLOPs of one call from XLA's cost analysis (None where the backend gives none).

    XLA counts a while loop's body once, so programs timed here keep their loops unrolled.
    """
    executable = compiled.executable if isinstance(compiled, Compiled) else compiled
    try:
        cost = executable.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None


def static_memory_bytes(compiled: Compiled | Any) -> int | None:
    """XLA's memory analysis of one call: arguments + outputs + temporaries - donated aliases."""
    executable = compiled.executable if isinstance(compiled, Compiled) else compiled
    try:
        m = executable.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def initial_state(config: Any, seed: int = 0) -> Any:
    """The training state of config.method's networks, initialised as the program does (jitted, init_key)."""
    from anomaly_core.program import methods, program

    return jax.jit(functools.partial(methods.for_config(config).training.init_state, config))(program.init_key(seed))


def block(tree: Any) -> Any:
    """Waits for every array in `tree` (JAX arrays; PyTorch tensors on a GPU are synchronised)."""
    leaves = jax.tree.leaves(tree)
    if any(isinstance(x, jax.Array) for x in leaves):
        jax.block_until_ready(tree)
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and any(isinstance(x, torch.Tensor) and x.is_cuda for x in leaves):
            torch.cuda.synchronize()
    return tree


@dataclasses.dataclass
class Timing:
    """Seconds per call: median and min of `times` (each a blocking call after warm-up)."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)


def interleaved(calls: Mapping[str, Callable[[], Any]], *, steps: int, warmup: int,
                block: int = 0) -> dict[str, Timing]:
    """Times each zero-argument call `steps` times, alternating between the calls in blocks.

    Each call must block on its own results (wrap with `block`). Alternating means a burst of
    load from another process slows every contender, not just the one running then. Blocks
    (default: min(5, steps // 2) calls) each start with one untimed call: a framework's worker
    threads keep spinning for a moment after it returns (OpenMP in PyTorch, XLA's pool), which
    would otherwise be charged to the first call of the other framework.
    """
    block = block or max(1, min(5, steps // 2))
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    while any(len(v) < steps for v in times.values()):
        for k, fn in calls.items():
            fn()  # absorbs the switch from the other contender
            for _ in range(min(block, steps - len(times[k]))):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: Timing(v) for k, v in times.items()}


def stateful(step: Callable[..., tuple[Any, Any]], state: Any, *args: Any) -> Callable[[], Any]:
    """A zero-argument blocking call that threads `state` through `step(state, *args) -> (state, out)`.

    Needed when the step donates its state: each call must receive the previous call's output.
    """
    box = [state]

    def call() -> Any:
        box[0], out = step(box[0], *args)
        return block((box[0], out))

    return call


def measure_peak_flops(device: jax.Device | None = None, n: int = 0, dtype: Any = jnp.float32,
                       repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul on `device`, the best of `repeats`: the achievable peak quoted against.

    The best, not the median: on a shared machine a burst of other work only ever lowers it.
    n = 0 picks 2048 on a CPU and 8192 on accelerators. For bfloat16 the accumulation is float32.
    """
    device = device or jax.devices()[0]
    if n <= 0:
        n = 2048 if device.platform == "cpu" else 8192
    a = jax.device_put(jnp.ones((n, n), dtype), device)
    b = jax.device_put(jnp.ones((n, n), dtype), device)
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    for _ in range(2):
        block(mm(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(mm(a, b))
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(times)


def device_peak_memory() -> tuple[int | None, str]:
    """(bytes, what it is): the device's peak bytes in use, else the process's peak RSS on a CPU."""
    device = jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), f"{device.platform} peak_bytes_in_use (whole process so far)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(rss_kib) * 1024, "process peak RSS (CPU has no device memory stats; whole process, both frameworks)"


def torch_peak_memory(reset: bool = False) -> int | None:
    """PyTorch's peak CUDA bytes allocated since the last reset (None on a CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return int(torch.cuda.max_memory_allocated())


def setup_torch(precision: str, threads: int | None = None) -> dict[str, Any]:
    """PyTorch device, thread count (CPU: as many as JAX's XLA uses) and the autocast context."""
    import contextlib

    import torch

    device = "cuda" if torch.cuda.is_available() and jax.devices()[0].platform == "gpu" else "cpu"
    if device == "cpu":
        torch.set_num_threads(threads or jax_cpu_threads())
    if precision == "bfloat16":
        autocast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    return {"device": device, "threads": torch.get_num_threads(), "autocast": autocast}


def jax_cpu_threads() -> int:
    """Threads XLA:CPU's intra-op pool uses: one per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(torch_threads: int | None = None) -> dict[str, Any]:
    """Where the numbers come from: devices, CPU, versions, threads, load average."""
    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {
        "jax_device": f"{device.platform}: {device.device_kind}",
        "jax_devices": jax.device_count(),
        "cpu": cpu,
        "cores_usable": jax_cpu_threads(),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],
    }
    if torch_threads is not None:
        import torch

        info.update(torch_version=torch.__version__, torch_threads=torch_threads,
                    jax_xla_cpu_threads=jax_cpu_threads())
    return info


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """rows as a markdown table; columns = (key, header)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def write_results(out: str, *, title: str, command: str, meta: Mapping[str, Any],
                  rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
                  notes: Sequence[str] = ()) -> str:
    """Writes <out>.json (meta + rows) and <out>.md (command, machine, table, notes); returns the markdown."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump({"title": title, "command": command, "meta": dict(meta), "rows": list(rows)}, f, indent=2,
                  default=str)
    machine = ", ".join(f"{k} {v}" for k, v in meta.items())
    md = "\n".join([f"### {title}", "", f"`{command}`", "", f"Machine: {machine}", "",
                    markdown_table(rows, columns), "", *[f"- {n}" for n in notes]]).rstrip() + "\n"
    with open(out + ".md", "w") as f:
        f.write(md)
    return md


def trained_run(doc: str, name: str, argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any, Any, Any]:
    """The flags of a script that studies one trained run (--workdir, --out with default
    benchmarks/results/<name>) and that run: (args, detector (api.load), its config, its
    state on the host)."""
    from anomaly_core.serving import api

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained run (its workdir)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", name))
    args = parser.parse_args(argv)
    detector = api.load(args.workdir)
    return args, detector, detector.config, jax.device_get(detector.state)


def load_config(spec: str) -> Any:
    """`get_config(preset)` of an ml_collections config given as 'file.py' or 'file.py:preset'."""
    import importlib.util

    path, _, preset = spec.partition(":")
    if not os.path.isfile(path):
        raise SystemExit(f"--config: no such file {path!r}")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def command_line() -> str:
    return "python -m " + (sys.modules["__main__"].__spec__.name if getattr(sys.modules["__main__"], "__spec__", None)
                           else sys.argv[0]) + " " + shlex.join(sys.argv[1:])


def split_arrays(data_config, split) -> tuple[Any, Any, Any]:
    """A data split as arrays: images (N, S, S, C), masks (N, S, S) bool, labels (N,)."""
    import numpy as np

    from anomaly_core import data as data_lib

    xs, ms, ls = [], [], []
    for b in data_lib.eval_batches(data_config, split, batch_size=32):
        v = np.asarray(b["valid"], bool)
        xs.append(np.asarray(b["image"])[v])
        ms.append(np.asarray(b["mask"])[v])
        ls.append(np.asarray(b["label"])[v])
    return np.concatenate(xs), np.concatenate(ms) > 0.5, np.concatenate(ls)
