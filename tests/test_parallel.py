"""Data parallelism: a sharded step equals the single-device step; multi-process CPU runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: the number of simulated CPU devices is fixed at JAX start-up.
SHARDED_VS_SINGLE = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, json
    jax.config.update("jax_num_cpu_devices", 4)
    # float64: an untrained U-Net critic (spectral norms not yet converged, gradient norms in
    # the hundreds) amplifies float32 rounding so much that merely reducing the batch in
    # another order moves the gradients by about 1%; in float64 the same
    # comparison isolates what sharding could break (global BatchNorm statistics, the
    # per-example penalties and Mixup pairing, replicated parameter updates).
    jax.config.update("jax_enable_x64", True)
    from anomaly_core.program.program import init_key
    from anomaly_core.training import parallel
    from configs.mvtec_bottle import get_config
    from funetgan_jax import train_state as fstate
    from funetgan_jax import updates as fupdates

    config = get_config("tiny")
    # CBAM pools over each example's own pixels and channels, nothing sharding could break;
    # one critic update per step still slices the stacked (k, batch) input sharded on its
    # batch axis. Together they cut the step's compile time by more than half (float32 on the
    # 2-core CPU: 44 s -> 18 s), for a program compiled twice here.
    config.model.d_attention, config.train.n_critic = "none", 1
    # Learning rates 0: with betas (0, 0.9) Adam's first moment is the gradient itself, so
    # opt_*.mu compares the gradients; a nonzero rate would compare Adam's sign-like update,
    # which flips for elements whose gradient is at float32 rounding level (the reduction
    # order differs between one and four devices) and says nothing about the sharding.
    config.train.lr_g = config.train.lr_d = config.train.lr_e = 0.0
    assert tuple(config.train.betas)[0] == 0.0
    # The program's initialisation key (unsafe_rbg): its init compiles about 3x faster than
    # from a threefry key.
    state0 = jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a,
                          jax.jit(lambda k: fstate.init_state(config, k))(init_key(0)))
    rng = np.random.default_rng(0)
    k, b, s = config.train.n_critic, config.train.batch_size, config.data.image_size
    batches = {"image": rng.uniform(size=(k, b, s, s, 3))}

    def run(devices):
        mesh = parallel.make_mesh(devices)
        rep = parallel.replicated(mesh)
        out = {}
        # The adversarial step only: it holds everything sharding could break. The encoder
        # step is a plain batch-mean loss through frozen networks (and compiling it for one
        # and four devices would add minutes to the test on a 2-core CPU).
        for name, fn, data, stacked in (("adv", fupdates.adversarial_step, batches, True),):
            step = jax.jit(lambda st, x, r, fn=fn: fn(config, st, x, r),
                           in_shardings=(rep, parallel.batch_sharded(mesh, stacked=stacked), None))
            st, m = step(parallel.replicate(state0, mesh), parallel.global_batch(data, mesh, stacked=stacked),
                         jax.random.key(1))
            out[name] = (parallel.fetch(st), parallel.fetch(m))
        return out

    one, four = run(jax.devices()[:1]), run(jax.devices())
    assert jax.tree.leaves(four["adv"][0])[0].dtype == jnp.float64
    # Each leaf (a gradient, a BatchNorm or spectral-norm statistic, a loss) relative to its
    # own scale: a sum over the batch reduced in another order differs by rounding only.
    worst, where = 0.0, ""
    for name in one:
        flat = jax.tree_util.tree_leaves_with_path(one[name])
        for (path, a), c in zip(flat, jax.tree.leaves(four[name])):
            a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
            if a.size:
                d = float(np.max(np.abs(a - c)) / max(1.0, float(np.max(np.abs(a)))))
                if d > worst:
                    worst, where = d, name + jax.tree_util.keystr(path)
    print(json.dumps({"devices": len(jax.devices()), "worst_rel_diff": worst, "where": where}))
    """
)


def _run_python(code: str, timeout: int = 1200, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_sharded_step_equals_single_device_step():
    proc = _run_python(SHARDED_VS_SINGLE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    assert result["worst_rel_diff"] < 1e-5, result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_run(tmp_path):
    """Two JAX processes on loopback (gloo collectives) train a few steps and evaluate.

    Uses the GON digits config: the multi-host plumbing (distributed init, per-process data
    shards, global arrays from process-local batches, gathered evaluation, process-0-only
    outputs) is shared by both methods, and this program compiles in seconds.
    """
    port = _free_port()
    procs = []
    for pid in range(2):
        args = [
            sys.executable, "launch.py", "--config=configs/gon_quickstart.py:digits", f"--workdir={tmp_path / 'run'}",
            "--config.distributed.initialize=True",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
            "--config.distributed.cpu_collectives=gloo",
            "--config.model.ngf=4", "--config.model.nz=8", "--config.train.batch_size=8",
            "--config.train.steps=4", "--config.train.log_every=2", "--config.train.checkpoint_every=2",
            "--config.eval.max_panels=1",
        ]
        procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONPATH": ROOT}))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert "metrics (test split)" in outs[0][0]
    assert "2 processes" in outs[0][1] + outs[1][1]
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["evaluation"]["train_steps"] == 4
    # The single-process run scores the same examples: the gathered evaluation is complete.
    assert metrics["evaluation"]["test_examples"] > 0
