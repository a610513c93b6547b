"""Data parallelism: a sharded step equals the single-device step; multi-process CPU runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: the number of simulated CPU devices is fixed at JAX start-up.
SHARDED_VS_SINGLE = textwrap.dedent(
    """
    import jax, numpy as np, json
    jax.config.update("jax_num_cpu_devices", 4)
    from anomaly_core import parallel
    from configs.mvtec_bottle import get_config
    from funetgan_jax import train as ft

    config = get_config("tiny")
    config.model.d_attention = "cbam"   # BatchNorm inside D: statistics must be global
    state0 = ft.init_state(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    k, b, s = config.train.n_critic, config.train.batch_size, config.data.image_size
    batches = {"image": rng.uniform(size=(k, b, s, s, 3)).astype(np.float32)}
    batch = {"image": batches["image"][0]}

    def run(devices):
        mesh = parallel.make_mesh(devices)
        rep = parallel.replicated(mesh)
        out = {}
        for name, fn, data, stacked in (("adv", ft.adversarial_step, batches, True),
                                        ("enc", ft.encoder_step, batch, False)):
            step = jax.jit(lambda st, x, r, fn=fn: fn(config, st, x, r),
                           in_shardings=(rep, parallel.batch_sharded(mesh, stacked=stacked), None))
            st, m = step(parallel.replicate(state0, mesh), parallel.global_batch(data, mesh, stacked=stacked),
                         jax.random.key(1))
            out[name] = (parallel.fetch(st), parallel.fetch(m))
        return out

    one, four = run(jax.devices()[:1]), run(jax.devices())
    worst = 0.0
    for name in one:
        for a, c in zip(jax.tree.leaves(one[name]), jax.tree.leaves(four[name])):
            a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
            worst = max(worst, float(np.max(np.abs(a - c) / (1.0 + np.abs(a)))) if a.size else 0.0)
    print(json.dumps({"devices": len(jax.devices()), "worst_rel_diff": worst}))
    """
)


def _run_python(code: str, timeout: int = 600, env_extra: dict | None = None) -> subprocess.CompletedProcess:
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


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path):
    """Two JAX processes on loopback train the tiny config a few steps and evaluate it."""
    port = _free_port()
    demo_root = tmp_path / "demo"
    procs = []
    for pid in range(2):
        args = [
            sys.executable, "launch.py", "--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            "--config.distributed.initialize=True",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
            "--config.distributed.cpu_collectives=gloo",
            f"--config.data.root={demo_root}", "--config.data.demo_num_train=24",
            "--config.data.demo_num_test_good=4", "--config.data.demo_num_test_defect=4",
            "--config.model.width=4", "--config.model.z_dim=8", "--config.train.batch_size=4",
            "--config.train.n_critic=2", "--config.train.generator_steps=2", "--config.train.encoder_steps=2",
            "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.eval.max_panels=1",
        ]
        procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONPATH": ROOT}))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert "metrics (test split)" in outs[0][0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["evaluation"]["train_steps"] == 4
