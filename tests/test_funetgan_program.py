"""f-UNetGAN end to end on the tiny preset: train, resume, evaluate, predict, launch.py."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from anomaly_core import data as data_lib
from anomaly_core.program import program
from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import Checkpointer
from configs.mvtec_bottle import get_config
from funetgan_jax import map_statistics as fstats
from funetgan_jax import train_state as fstate
from funetgan_jax import train as ft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo"))


def tiny_config(demo_root: str, generator_steps: int = 2, encoder_steps: int = 2):
    config = get_config("tiny")
    # Without CBAM in the critic: nothing here depends on it, and the fused adversarial step
    # compiles in about 2/3 of the time (CBAM's layers, parity and conversion: tests/test_cbam.py,
    # tests/test_parity_funetgan.py, tests/test_torch_import.py).
    config.model.d_attention = "none"
    config.data.source = "demo"
    config.data.root = demo_root
    config.data.demo_crop_size = 64
    config.data.demo_num_train = 24
    config.data.demo_num_test_good = 4
    config.data.demo_num_test_defect = 6
    config.train.generator_steps = generator_steps
    config.train.encoder_steps = encoder_steps
    config.train.checkpoint_every = 2
    return config


def final_state(config, workdir):
    ckpt = Checkpointer(workdir)
    mesh = parallel.make_mesh()
    step, state, data_state, _ = ckpt.restore(program.abstract_state(ft.METHOD, config, mesh))
    ckpt.close()
    return step, parallel.fetch(state), data_state


@pytest.fixture(scope="module")
def straight_run(demo_root, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight"))
    results = program.train_and_evaluate(ft.METHOD, tiny_config(demo_root), workdir)
    return workdir, results


def test_train_writes_every_output(straight_run):
    workdir, results = straight_run
    assert os.path.exists(os.path.join(workdir, "config.json"))
    for name in ("metrics.json", "scores.csv", "roc.png", "pro.png", "score_histogram.png"):
        assert os.path.exists(os.path.join(workdir, "eval", name)), name
    metrics = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
    s = metrics["scalars"]
    for key in ("image_auroc", "pixel_auroc", "pixel_auprc", "pixel_aupro", "image_auroc_map_max"):
        assert 0.0 <= s[key] <= 1.0, key
    assert metrics["evaluation"]["test_examples"] == 10
    assert metrics["thresholds"]["image"]["rule"] in ("f1", "mean_std")
    rows = list(csv.DictReader(open(os.path.join(workdir, "eval", "scores.csv"))))
    assert len(rows) == 10 and {r["label"] for r in rows} == {"0", "1"}
    assert len(os.listdir(os.path.join(workdir, "eval", "panels"))) == 2
    # The no-learning baseline is reported beside the model on the same split.
    for key in ("image_auroc", "image_auroc_map_max", "pixel_auroc", "pixel_aupro"):
        assert 0.0 <= metrics["baseline"][key] <= 1.0, key
    # Progress grids at each stage's end: 16 samples of 32x32 in two rows of 8; the validation
    # images (fewer than 8 here) in one row above the row of their reconstructions.
    progress = sorted(os.listdir(os.path.join(workdir, "progress")))
    assert progress == ["adversarial_000002_samples.png", "encoder_000004_reconstructions.png"]
    samples = np.asarray(Image.open(os.path.join(workdir, "progress", progress[0])))
    assert samples.shape == (2 * 34 - 2, 8 * 34 - 2, 3)
    n_val = metrics["evaluation"]["val_examples"]
    recons = np.asarray(Image.open(os.path.join(workdir, "progress", progress[1])))
    assert recons.shape == (2 * 34 - 2, n_val * 34 - 2, 3)
    # Every variable of the final state is finite and the step count is complete.
    step, state, _ = final_state(tiny_config(""), workdir)
    assert step == 4
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


def test_resume_gives_the_same_result(straight_run, demo_root, tmp_path):
    """Stop after the adversarial stage, rerun the full command: identical parameters and scores."""
    workdir, results = straight_run
    partial = str(tmp_path / "resumed")
    program.train_and_evaluate(ft.METHOD, tiny_config(demo_root, encoder_steps=0), partial)
    resumed = program.train_and_evaluate(ft.METHOD, tiny_config(demo_root), partial)
    _, a, data_a = final_state(tiny_config(""), workdir)
    _, b, data_b = final_state(tiny_config(""), partial)
    assert data_a == data_b
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert resumed["scalars"] == results["scalars"]


def test_eval_and_predict_modes_through_launch(straight_run, demo_root, tmp_path):
    workdir, results = straight_run
    base = [sys.executable, "launch.py", "--config=configs/mvtec_bottle.py:tiny", f"--workdir={workdir}",
            "--config.model.d_attention=none", "--config.data.source=demo", f"--config.data.root={demo_root}",
            "--config.data.demo_crop_size=64",
            "--config.data.demo_num_train=24", "--config.data.demo_num_test_good=4",
            "--config.data.demo_num_test_defect=6"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    ev = subprocess.run(base + ["--mode=eval"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert f'"image_auroc": {round(results["scalars"]["image_auroc"], 4)}' in ev.stdout

    images = tmp_path / "mine"
    images.mkdir()
    src = os.path.join(demo_root, "demo_brick", "test")
    defect = sorted(d for d in os.listdir(src) if d != "good")[0]
    for k, name in enumerate(sorted(os.listdir(os.path.join(src, defect)))[:2]):
        # The second one with a legal 250-byte name: output names derived from it stay bounded.
        target = name if k == 0 else "x" * (250 - len(name)) + name
        os.link(os.path.join(src, defect, name), images / target)
    (images / "notes.txt").write_text("not an image")
    pr = subprocess.run(base + ["--mode=predict", f"--input={images}"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
    assert pr.returncode == 0, pr.stderr[-3000:]
    rows = list(csv.DictReader(open(os.path.join(workdir, "predict", "predictions.csv"))))
    assert len(rows) == 2 and all(r["predicted_label"] in ("0", "1") for r in rows)
    heatmaps = [f for f in os.listdir(os.path.join(workdir, "predict")) if f.endswith("_heatmap.png")]
    assert len(heatmaps) == 2 and all(len(f) < 120 for f in heatmaps), heatmaps
    # Again with one heatmap: the folder is replaced whole, so no heatmap of the first run stays.
    pr = subprocess.run(base + ["--mode=predict", f"--input={images}", "--config.eval.predict_heatmaps=1"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900)
    assert pr.returncode == 0, pr.stderr[-3000:]
    assert len(list(csv.DictReader(open(os.path.join(workdir, "predict", "predictions.csv"))))) == 2
    assert len([f for f in os.listdir(os.path.join(workdir, "predict")) if f.endswith("_heatmap.png")]) == 1
    assert sorted(f for f in os.listdir(workdir) if f.startswith("predict")) == ["predict"]


def test_missing_mvtec_root_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "launch.py", "--config=configs/mvtec_bottle.py:tiny", f"--workdir={tmp_path}",
         f"--config.data.root={tmp_path / 'nowhere'}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "config.data.root" in proc.stderr and "mvtec.com" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_converter_exports_a_training_run_and_imports_it_back(straight_run, demo_root, tmp_path):
    """convert_checkpoint on a run written by training: --reverse --workdir --network=all writes
    the generator, discriminator and encoder in the original's format (BigGAN-style u0/sv0) and
    in torch's spectral_norm format; --workdir --network=all makes a new run of the files whose
    checkpoint holds exactly the trained variables (the torch-format files: the same weights,
    the spectral-norm state re-expressed)."""
    torch = pytest.importorskip("torch")
    from anomaly_core.interop import convert_checkpoint as cc
    from anomaly_core.training.checkpointing import CheckpointError

    workdir, _ = straight_run
    config = tiny_config(demo_root)
    step, trained, _ = final_state(config, workdir)
    original = [str(tmp_path / f"{n}.pth") for n in ("G", "D", "E")]
    cc.export_run(config, "all", workdir, original)
    d_file = torch.load(original[1], weights_only=True)
    assert d_file["input_layer.conv1.u0"].shape == (1, config.model.width) and "linear.sv0" in d_file
    e_file = torch.load(original[2], weights_only=True)
    assert "input_layer.weight_orig" in e_file and "residual_conv_1.conv1.u0" in e_file
    with pytest.raises(FileExistsError, match="already exists"):
        cc.export_run(config, "generator", workdir, original[:1])

    back = str(tmp_path / "back")
    cc.import_run(config, original, back)
    back_step, imported, _ = final_state(config, back)
    assert back_step == step
    for slot in ("g", "d", "e"):
        jax.tree.map(np.testing.assert_array_equal, imported[slot], trained[slot])
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        cc.import_run(config, original, back)

    torch_sn = [str(tmp_path / f"{n}_torch_sn.pth") for n in ("G", "D", "E")]
    cc.export_run(config, "all", workdir, torch_sn, torch_format="torch")
    assert "input_layer.conv1.weight_orig" in torch.load(torch_sn[1], weights_only=True)
    again = str(tmp_path / "again")
    cc.import_run(config, torch_sn, again)  # reads the format and switches the setting itself
    assert json.load(open(os.path.join(again, "config.json")))["model"]["spectral_norm"] == "torch"
    torch_config = cc.with_spectral_norm(config, "torch")
    _, re_expressed, _ = final_state(torch_config, again)
    for slot in ("g", "d", "e"):
        jax.tree.map(np.testing.assert_array_equal, re_expressed[slot]["params"], trained[slot]["params"])
    # The run records its spectral norm: the other setting is refused before anything is read.
    with pytest.raises(CheckpointError, match=r"config.model.spectral_norm='torch' there, 'biggan' in the config "
                                              r"\(pass --config.model.spectral_norm=torch\)"):
        program.evaluate(ft.METHOD, config, again)


def test_checkpoint_settings_are_checked_before_restoring():
    """program.meta_checker with f-UNetGAN's recorded settings (every config.model.* but dtype)."""
    from anomaly_core.program import program
    from anomaly_core.training.checkpointing import CheckpointError

    config = tiny_config("")
    check = program.meta_checker(ft.METHOD, config)
    meta = program.checkpoint_meta(ft.METHOD, config)
    assert meta["settings"]["config.model.spectral_norm"] == "biggan"
    assert "config.model.dtype" not in meta["settings"]
    check("ckpt/4", json.loads(json.dumps(meta)))  # what a checkpoint of this config reads back: accepted
    with pytest.raises(CheckpointError, match=r"ckpt/4 was written with other model settings.*"
                                              r"config.model.spectral_norm='torch' there, 'biggan' in the config"):
        check("ckpt/4", {"method": "funetgan"})  # written before settings were recorded: torch spectral norm
    with pytest.raises(CheckpointError, match=r"config.model.width=8 there, 4 in the config \(pass "
                                              r"--config.model.width=8\)"):
        check("ckpt/4", {**meta, "settings": {**meta["settings"], "config.model.width": 8}})
    with pytest.raises(CheckpointError, match="written by method 'gon'"):
        check("ckpt/4", {"method": "gon"})


def test_a_workdir_refuses_a_resume_with_other_settings(straight_run, demo_root):
    """program.check_resume on a finished run: another data root or seed is refused with each
    difference named (before anything is written), more steps are allowed, fewer steps point
    to --mode=eval, and --allow_changes continues deliberately."""
    from anomaly_core.program import program
    from anomaly_core.training.checkpointing import CheckpointError

    workdir, _ = straight_run
    config_json = open(os.path.join(workdir, "config.json")).read()
    ckpt = Checkpointer(workdir)
    try:
        program.check_resume(ckpt, ft.METHOD, tiny_config(demo_root))  # the run's own settings: accepted
        program.check_resume(ckpt, ft.METHOD, tiny_config(demo_root, generator_steps=3, encoder_steps=3))
        changed = tiny_config(demo_root)
        changed.data.root = "/elsewhere"
        changed.train.lr_g = 5e-4
        with pytest.raises(CheckpointError) as info:
            program.check_resume(ckpt, ft.METHOD, changed)
        message = str(info.value)
        assert f"config.data.root={demo_root!r} there, '/elsewhere' now" in message
        assert "config.train.lr_g=0.0001 there, 0.0005 now" in message and "--allow_changes" in message
        program.check_resume(ckpt, ft.METHOD, changed, allow_changes=True)
        with pytest.raises(CheckpointError, match="has trained 4 steps, this config trains 2.*--mode=eval"):
            program.check_resume(ckpt, ft.METHOD, tiny_config(demo_root, generator_steps=1, encoder_steps=1))
    finally:
        ckpt.close()
    other_seed = tiny_config(demo_root)
    other_seed.seed = 7
    with pytest.raises(CheckpointError, match=r"config.seed=0 there, 7 now"):
        program.train_and_evaluate(ft.METHOD, other_seed, workdir)
    assert open(os.path.join(workdir, "config.json")).read() == config_json


def test_a_config_of_another_method_is_one_clear_error():
    """--config.method=funetgan on a GON config (and the reverse) names the first missing setting."""
    from anomaly_core.program import program
    from configs.gon_quickstart import get_config as gon_config
    from gon_jax import train as gt

    with pytest.raises(ValueError, match=r"config.model.z_dim is missing: config.method='funetgan' reads the "
                                         r"settings of its own configs \(e.g. configs/quickstart.py\)"):
        program.check_config(gon_config("digits"), ft.METHOD)
    with pytest.raises(ValueError, match=r"config.model.kind is missing: config.method='gon'"):
        program.check_config(tiny_config(""), gt.METHOD)
    program.check_config(tiny_config(""), ft.METHOD)


def test_map_statistics_of_a_checkpoint_without_them_come_from_the_training_split(straight_run, demo_root):
    """fill_state (a checkpoint written before state['map_stats'] existed): the moments over
    every training pixel, computed with the trained networks; an untrained state keeps the
    placeholders."""
    config = tiny_config(demo_root)
    _, state, _ = final_state(config, straight_run[0])
    splits = data_lib.Splits(config.data)
    filled = fstats.fill_map_stats(config, {k: v for k, v in state.items() if k != "map_stats"}, splits["train"])
    x = np.concatenate([np.asarray(b["image"])[np.asarray(b["valid"], bool)]
                        for b in data_lib.eval_batches(config.data, splits["train"], batch_size=5)])
    expected = jax.jit(lambda s, x: fstats.batch_map_stats(config, s, x))(state, jnp.asarray(x))
    for key, value in expected.items():
        np.testing.assert_allclose(filled["map_stats"][key], value, rtol=1e-4)
    # The same networks with an encoder optimiser that has not stepped (an untrained state's).
    fresh = {**state, "opt_e": jax.tree.map(jnp.zeros_like, state["opt_e"])}
    untrained = fstats.fill_map_stats(config, fresh, splits["train"])
    assert jax.tree.map(float, untrained["map_stats"]) == jax.tree.map(float, fstate.initial_map_stats())


def test_scoring_with_the_critic_term_a_run_trained_without_it_takes_its_statistics_from_the_data(
        straight_run, demo_root):
    """The run trained with config.eval.critic_weight 0, so its encoder stage did not gather
    the map statistics; restored for scoring with the critic term, they are computed from the
    training split (and the checkpoint on disk keeps its placeholders)."""
    workdir, _ = straight_run
    config = tiny_config(demo_root)
    mesh = parallel.make_mesh()
    _, saved, _ = final_state(config, workdir)
    assert jax.tree.map(float, saved["map_stats"]) == jax.tree.map(float, fstate.initial_map_stats())
    state, _, _ = program.restore_for_inference(ft.METHOD, config, workdir, mesh, step=4)
    assert jax.tree.map(float, parallel.fetch(state)["map_stats"]) == jax.tree.map(float, fstate.initial_map_stats())
    config.eval.critic_weight = 1.0
    assert fstats.map_stats_missing(config, saved)
    state, _, _ = program.restore_for_inference(ft.METHOD, config, workdir, mesh, step=4)
    expected = fstats.fill_map_stats(config, saved, data_lib.Splits(config.data)["train"])["map_stats"]
    for key, value in expected.items():
        np.testing.assert_allclose(parallel.fetch(state)["map_stats"][key], value, rtol=1e-5)
    assert not fstats.map_stats_missing(config, parallel.fetch(state))
    _, again, _ = final_state(config, workdir)
    assert jax.tree.map(float, again["map_stats"]) == jax.tree.map(float, fstate.initial_map_stats())
