"""The measuring tools behind docs/BENCHMARKS.md and the precision helpers: FLOP counts
against hand counts, donation in the memory figure, the alternating timer's bookkeeping,
the result files, and the dtype rules."""
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.networks.precision import at_least_f32, cast, compute_dtype
from benchmarks import common
from benchmarks.common import load_config


def test_flops_of_a_matmul_is_2_n_cubed():
    n = 64
    a = jnp.ones((n, n), jnp.float32)
    compiled = common.compile_jax(lambda x, y: x @ y, a, a)
    assert compiled.lower_s > 0 and compiled.compile_s > 0
    assert common.flops_of(compiled) == 2 * n**3
    np.testing.assert_array_equal(compiled(a, a), np.full((n, n), n, np.float32))


def test_static_memory_subtracts_the_donated_state():
    x = jnp.zeros((1000,), jnp.float32)
    kept = common.compile_jax(lambda s: s + 1, x)
    donated = common.compile_jax(lambda s: s + 1, jnp.zeros((1000,), jnp.float32), donate_argnums=0)
    # argument 4000 B + output 4000 B; donating the argument lets the output reuse its buffer
    assert common.static_memory_bytes(kept) - common.static_memory_bytes(donated) == 4000


def test_interleaved_times_every_call_steps_times_in_blocks():
    log: list[str] = []

    def make(name, seconds):
        def call():
            log.append(name)
            time.sleep(seconds)
        return call

    timing = common.interleaved({"a": make("a", 0.002), "b": make("b", 0.02)}, steps=6, warmup=1, block=2)
    assert len(timing["a"].times) == len(timing["b"].times) == 6
    # 1 warm-up each, then 3 blocks each of (1 untimed + 2 timed) calls, alternating a, b
    assert log[:2] == ["a", "b"]
    assert log[2:] == (["a"] * 3 + ["b"] * 3) * 3
    assert 0.002 <= timing["a"].min <= timing["a"].median < timing["b"].min
    assert timing["b"].median >= 0.02


def test_stateful_threads_the_donated_state_through_calls():
    step = jax.jit(lambda s, inc: (s + inc, s.sum()), donate_argnums=0)
    call = common.stateful(step, jnp.zeros(3), jnp.ones(3))
    outs = [float(call()[1]) for _ in range(3)]
    assert outs == [0.0, 3.0, 6.0]


def test_write_results_writes_json_and_markdown(tmp_path):
    rows = [{"step": "D", "ms": 12.3456, "speedup": None}, {"step": "G", "ms": 1234.5, "speedup": 2.0}]
    md = common.write_results(str(tmp_path / "sub" / "r"), title="T", command="python -m x", meta={"load": 1.5},
                              rows=rows, columns=[("step", "step"), ("ms", "ms"), ("speedup", "x")],
                              notes=["a note"])
    saved = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert saved["rows"] == rows and saved["meta"] == {"load": 1.5} and saved["command"] == "python -m x"
    assert (tmp_path / "sub" / "r.md").read_text() == md
    assert "| D | 12.3 | - |" in md and "| G | 1.23e+03 | 2 |" in md and "- a note" in md


def test_config_step_names_a_missing_config_file(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        load_config(str(tmp_path / "nope.py"))
    config = load_config("configs/quickstart.py")
    assert config.method == "funetgan" and config.model.image_size == 64


def test_precision_helpers():
    assert compute_dtype({"dtype": "float32"}) is None
    with pytest.raises(ValueError, match=r"config\.model\.dtype is missing"):
        compute_dtype({})  # no fallback: every model config defines it
    assert compute_dtype({"dtype": "bfloat16"}) == jnp.bfloat16
    with pytest.raises(ValueError, match=r"config\.model\.dtype must be one of \('float32', 'bfloat16'\), "
                                         r"got 'float16'"):
        compute_dtype({"dtype": "float16"})
    x = jnp.ones(2, jnp.bfloat16)
    assert at_least_f32(x).dtype == jnp.float32
    assert at_least_f32(jnp.ones(2, jnp.float32)).dtype == jnp.float32
    assert at_least_f32(jnp.ones(2, jnp.int32)).dtype == jnp.int32
    assert cast(x, None) is x and cast(jnp.ones(2), jnp.bfloat16).dtype == jnp.bfloat16
    with jax.enable_x64(True):
        assert at_least_f32(jnp.ones(2, jnp.float64)).dtype == jnp.float64


def test_demo_scale_measures_the_stripe_period():
    """benchmarks.demo_scale: the first autocorrelation peak of vertical stripes of period p
    (along the rows) is p; no peak across them (constant columns) is None."""
    from benchmarks.demo_scale import autocorrelation, first_peak

    for period in (6, 8, 13):
        cols = np.cos(2 * np.pi * np.arange(64) / period)
        images = np.broadcast_to(cols[None, None, :, None], (3, 64, 64, 3)) + 0.01 * np.random.default_rng(0).random(
            (3, 64, 64, 3))
        assert first_peak(autocorrelation(images, axis=2)) == period
    assert first_peak(np.array([1.0, 0.8, 0.5, 0.2, 0.1])) is None


def test_image_score_reductions_against_brute_force():
    """benchmarks.funetgan_image_scores: the top-q mean is the mean of the k largest pixels
    (k = round(q * H * W), at least 1); subtracting the training mean map cancels a bright
    pixel every map has at one place, and standardising divides by the per-pixel spread."""
    from benchmarks.funetgan_image_scores import SPREAD_FLOOR, reductions, top_fraction_mean

    rng = np.random.default_rng(0)
    maps = rng.random((5, 8, 8))
    for q, k in ((0.005, 1), (0.05, 3), (0.2, 13), (1.0, 64)):
        brute = np.array([np.mean(sorted(m.ravel())[-k:]) for m in maps])
        np.testing.assert_allclose(top_fraction_mean(maps, q), brute, rtol=1e-12)
    reference = 0.1 * rng.random((7, 8, 8))
    reference[:, 0, 0] += 5.0  # an artefact at one place in every map
    test = 0.1 * rng.random((4, 8, 8))
    test[:, 0, 0] += 5.0
    test[2, 4, 4] += 1.0  # one real defect
    out = reductions(test, reference)
    np.testing.assert_allclose(out["map: max"], test[:, 0, 0])  # the artefact decides every raw maximum
    assert np.argmax(out["map - training mean: max"]) == 2
    mu, sd = reference.mean(0), reference.std(0) + SPREAD_FLOOR
    np.testing.assert_allclose(out["(map - training mean) / sd: mean"], ((test - mu) / sd).mean(axis=(1, 2)))
    np.testing.assert_allclose(out["map: top 20.0%"], top_fraction_mean(test, 0.2))
    assert len(out) == 3 * (2 + 6)
