"""benchmarks/scoring_speed.py: it measures the modes docs/BENCHMARKS.md names (the shipped CPU
presets, scored through the program's own score function) and writes one row per mode.
Mechanics only: no timing thresholds."""
import json
import math

import numpy as np

from benchmarks import scoring_speed


def test_cases_are_the_shipped_cpu_presets_at_64_px():
    rows = {(m, mode.split(" ")[0]): c for m, mode, c in scoring_speed.cases()}
    assert set(rows) == {("f-UNetGAN", "encoder-only"), ("f-UNetGAN", "refined"), ("GON", "gradient-encoded,"),
                         ("CAE", "reconstruction")}
    enc, ref = rows[("f-UNetGAN", "encoder-only")], rows[("f-UNetGAN", "refined")]
    assert enc.eval.refine_steps == 0 and ref.eval.refine_steps == 75
    assert enc.model == ref.model and enc.model.width == 4  # the quickstart's networks, only the scoring differs
    assert enc.eval.kappa == 0 and enc.eval.critic_weight == 0
    gon, cae = rows[("GON", "gradient-encoded,")], rows[("CAE", "reconstruction")]
    assert gon.model.kind == "conv_gon" and gon.eval.bn_statistics == "context" and cae.model.kind == "cae"
    assert {c.data.image_size for c in rows.values()} == {64}


def test_score_callable_is_the_programs_score_function():
    """The benchmark's encoder-only call gives what funetgan_jax.score_fns.score_fn gives (the
    function evaluation jits) on the same state."""
    import jax

    from funetgan_jax import score_fns as fscore

    _, _, config = scoring_speed.cases(tiny=True)[0]
    score, state, mesh = scoring_speed.score_callable(config)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    with jax.set_mesh(mesh):
        got = score({"image": x})
    want = jax.jit(fscore.score_fn(config))(state, {"image": x})
    for k in ("image_score", "anomaly_map", "reconstruction"):
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-6, atol=1e-6)


def test_tiny_run_writes_a_row_per_mode_and_the_profile(tmp_path):
    out = str(tmp_path / "s")
    md = scoring_speed.main(["--tiny", "--batch", "3", "--steps", "1", "--warmup", "0", "--profile",
                             "--only", "encoder-only,CAE", "--out", out])
    saved = json.loads(open(out + ".json").read())
    assert [(r["method"], r["mode"]) for r in saved["rows"]] == [("f-UNetGAN", "encoder-only G(E(x))"),
                                                                 ("CAE", "reconstruction")]
    for r in saved["rows"]:
        assert r["batch"] == 3
        for k in ("latency_ms", "images_per_s", "ms_per_image", "first_call_1_s", "first_call_batch_s"):
            assert math.isfinite(r[k]) and r[k] > 0, k
        np.testing.assert_allclose(r["images_per_s"] * r["ms_per_image"], 1e3)
    assert saved["meta"]["tiny"] is True and saved["meta"]["batch"] == 3
    assert "| f-UNetGAN | encoder-only G(E(x)) | 32 |" in md and "| CAE | reconstruction | 64 |" in md
    prof = json.loads(open(out + "_profile.json").read())["rows"]
    assert [p["piece"].split(" ")[0] for p in prof] == ["E", "G", "map", "smoothing", "whole"]
    whole = prof[-1]
    assert whole["share_of_whole"] == 1.0
    for p in prof:
        done, _, total = p["canonical_convs"].partition(" of ")
        assert 0 <= int(done) <= int(total), p
    assert int(whole["canonical_convs"].partition(" of ")[2]) > 0
    # XLA's FLOP count of the whole score is at least that of its two networks
    assert whole["gflop_per_image"] >= prof[0]["gflop_per_image"] + prof[1]["gflop_per_image"] - 1e-9


def test_quickstart_encoder_only_convolutions_take_the_fast_path():
    """At the quickstart's size every convolution of the encoder-only score compiles to
    XLA:CPU's canonical layout (none on the slow loop emitter; at 32 px, E's last block at
    2x2 would not). A change that loses it shows here, not only as a slower benchmark."""
    import jax.numpy as jnp

    from benchmarks import common
    from funetgan_jax import score_fns as fscore

    _, _, config = scoring_speed.cases()[0]
    state = scoring_speed._state(config)
    compiled = common.compile_jax(fscore.score_fn(config), state, {"image": jnp.zeros((2, 64, 64, 3), jnp.float32)})
    done, _, total = scoring_speed.convolution_layouts(compiled).partition(" of ")
    assert int(total) >= 20 and done == total
