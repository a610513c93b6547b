"""A trained GON run is self-contained: its scoring context is saved with the checkpoint,
so predictions do not change when the training folder changes or disappears."""
from __future__ import annotations

import collections
import csv
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from anomaly_core.data import load_split
from anomaly_core.evaluation import output_folder
from anomaly_core.program import program
from anomaly_core.serving import predict
from anomaly_core.training import parallel
from configs.gon_base import shrink_gon
from configs.gon_quickstart import get_config
from gon_jax import train as gon_train
from tests.data_fixtures import flip_byte_in_largest_file, make_tree, noise_image, write_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gon_data"))
    make_tree(root, n_train=8, n_test_good=3, defects={"crack": 3}, size=(28, 28))
    config = shrink_gon(get_config("digits"), steps=6)
    config.train.checkpoint_every = 1  # six validated checkpoints (the latest 3 and the best kept)
    config.data.source, config.data.root, config.data.categories = "mvtec", root, ("widget",)
    config.data.val_fraction = 0.25
    workdir = str(tmp_path_factory.mktemp("gon_run"))
    program.train_and_evaluate(gon_train.METHOD, config, workdir)
    images = os.path.join(root, "widget", "test", "crack")
    return config, workdir, root, images


def _scores(workdir: str) -> dict[str, str]:
    with open(os.path.join(workdir, "predict", "predictions.csv"), newline="") as f:
        return {os.path.basename(r["path"]): r["score"] for r in csv.DictReader(f)}


def test_checkpoint_holds_the_scoring_context(trained):
    config, workdir, _, _ = trained
    state, _, _ = program.restore_for_inference(gon_train.METHOD, config, workdir, parallel.make_mesh())
    np.testing.assert_array_equal(np.asarray(state["context"]), gon_train.scoring_context(config, load_split(config.data, "train")))
    assert state["context"].shape == (config.train.batch_size - 1, 28, 28, 1)


def test_preflight_returns_the_abstract_state_that_restore_reuses(trained, monkeypatch):
    config, workdir, _, _ = trained
    mesh = parallel.make_mesh()
    abstract = program.preflight(gon_train.METHOD, config, mesh)
    expected = program.abstract_state(gon_train.METHOD, config, mesh)
    assert jax.tree.structure(abstract) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(abstract), jax.tree.leaves(expected)):
        assert (got.shape, got.dtype, got.sharding) == (want.shape, want.dtype, want.sharding)
    reference, step, how = program.restore_for_inference(gon_train.METHOD, config, workdir, mesh)

    def traced_again(*args, **kwargs):
        raise AssertionError("restore_for_inference traced the abstract state it was given")

    monkeypatch.setattr(program, "abstract_state", traced_again)
    state, step2, how2 = program.restore_for_inference(gon_train.METHOD, config, workdir, mesh, abstract=abstract)
    assert (step2, how2) == (step, how)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_predict_scores_do_not_depend_on_the_training_folder(trained):
    config, workdir, root, images = trained
    predict.predict(gon_train.METHOD, config, workdir, images)
    before = _scores(workdir)
    assert len(before) == 3
    # Every training image replaced by other noise: the context the training data would give changes.
    train = os.path.join(root, "widget", "train", "good")
    saved = str(train) + ".saved"
    shutil.copytree(train, saved)
    rng = np.random.default_rng(99)
    try:
        for name in os.listdir(train):
            write_image(os.path.join(train, name), noise_image(rng, 28, 28))
        assert not np.array_equal(gon_train.scoring_context(config, load_split(config.data, "train")),
                                  program.restore_for_inference(gon_train.METHOD, config, workdir,
                                                                parallel.make_mesh())[0]["context"])
        predict.predict(gon_train.METHOD, config, workdir, images)
        assert _scores(workdir) == before
        shutil.rmtree(train)  # and with the training images gone
        predict.predict(gon_train.METHOD, config, workdir, images)
        assert _scores(workdir) == before
    finally:
        shutil.rmtree(train, ignore_errors=True)
        shutil.move(saved, train)


def test_checkpoint_from_before_the_saved_context_takes_it_from_the_data(trained, tmp_path, caplog):
    config, workdir, _, images = trained
    predict.predict(gon_train.METHOD, config, workdir, images)
    expected = _scores(workdir)
    legacy = str(tmp_path / "legacy")
    shutil.copytree(workdir, legacy)
    mesh = parallel.make_mesh()
    state, step, _ = program.restore_for_inference(gon_train.METHOD, config, workdir, mesh)
    # Rewrite the checkpoint as versions before the saved context wrote it: no 'context' in the
    # state, no state_keys or digests in the metadata.
    shutil.rmtree(os.path.join(legacy, "checkpoints"))
    ckpt = program.Checkpointer(legacy, async_save=False)
    ckpt.save(step, {k: v for k, v in state.items() if k != "context"}, meta=program.checkpoint_meta(
        gon_train.METHOD, config))
    ckpt.wait()
    ckpt.close()
    meta_path = os.path.join(legacy, "checkpoints", str(step), "meta", "metadata")
    meta = json.load(open(meta_path))
    for key in ("state_keys", "digests", "settings"):
        meta.pop(key)
    json.dump(meta, open(meta_path, "w"))
    predict.predict(gon_train.METHOD, config, legacy, images)
    assert "written before context was saved with it" in caplog.text
    assert _scores(legacy) == expected


def test_other_batch_size_than_the_saved_context_is_named(trained):
    config, workdir, _, _ = trained
    other = config.copy_and_resolve_references()
    other.train.batch_size = 3
    with pytest.raises(program.CheckpointError, match=r"config.train.batch_size=4 there, 3 in the config"):
        program.restore_for_inference(gon_train.METHOD, other, workdir, parallel.make_mesh())


def _tiny(root: str):
    config = shrink_gon(get_config("digits"), steps=2)
    config.data.source, config.data.root, config.data.categories = "mvtec", root, ("widget",)
    return config


@pytest.mark.parametrize("case, message", [
    ("only_normal_test_images", r"test split .* holds 3 image\(s\), all normal: image AUROC needs normal and anomalous"),
    ("zero_byte_mask", r"Mask of .*crack/000.png is unusable: .*empty file"),
    ("masks_empty_at_model_size", r"every ground-truth mask is empty at config.data.image_size=28"),
    ("eval_setting", r"config.eval.aupro_fpr_limit must be a number in \(0, 1\], got 0.0"),
    ("method_eval_setting", r"evaluation settings do not fit gon: .*scoring"),
    ("threshold_rule_needs_anomalous_validation", r"threshold_rule='f1' needs anomalous validation images"),
])
def test_evaluation_problems_fail_before_training(tmp_path, case, message):
    root = str(tmp_path / "data")
    make_tree(root, n_train=8, n_test_good=3, size=(28, 28),
              defects={} if case == "only_normal_test_images" else {"crack": 2})
    config = _tiny(root)
    gt = os.path.join(root, "widget", "ground_truth", "crack")
    if case == "zero_byte_mask":
        open(os.path.join(gt, "000_mask.png"), "wb").close()
    elif case == "masks_empty_at_model_size":
        for name in os.listdir(gt):  # a one-pixel defect in a 280x280 mask: gone at 28x28
            mask = np.zeros((280, 280), np.uint8)
            mask[140, 140] = 255
            write_image(os.path.join(gt, name), mask)
            write_image(os.path.join(root, "widget", "test", "crack", name.replace("_mask", "")),
                        noise_image(np.random.default_rng(0), 280, 280))
    elif case == "only_normal_test_images":
        config.data.source = "folder"  # no ground_truth folder either
        config.data.root = os.path.join(root, "widget")
    elif case == "eval_setting":
        config.eval.aupro_fpr_limit = 0.0
    elif case == "method_eval_setting":
        config.eval.scoring = "nope"
    elif case == "threshold_rule_needs_anomalous_validation":
        config.eval.threshold_rule = "f1"
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        program.train_and_evaluate(gon_train.METHOD, config, workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # nothing trained


def test_checkpoint_selection_best_latest_and_step(trained, tmp_path):
    config, workdir, _, images = trained
    from anomaly_core.training.checkpointing import Checkpointer

    ckpt = Checkpointer(workdir)
    steps = ckpt.all_steps()
    recorded = {s: (ckpt.read_meta(s) or {}).get("validation", {}).get("val_score") for s in steps}
    ckpt.close()
    assert len(steps) >= 3 and all(v is not None for v in recorded.values()), recorded
    best = min(steps, key=lambda s: (recorded[s], -s))
    mesh = parallel.make_mesh()
    assert program.restore_for_inference(gon_train.METHOD, config, workdir, mesh)[1:] == (
        best, "best (lowest validation val_score)")
    for choice, expected in (("latest", max(steps)), (str(min(steps)), min(steps))):
        other = config.copy_and_resolve_references()
        other.eval.checkpoint = choice
        assert program.restore_for_inference(gon_train.METHOD, other, workdir, mesh)[1] == expected
    other = config.copy_and_resolve_references()
    other.eval.checkpoint = "999"
    with pytest.raises(program.CheckpointError, match=r"no checkpoint of step 999 .*config.eval.checkpoint"):
        program.restore_for_inference(gon_train.METHOD, other, workdir, mesh)
    results = program.evaluate(gon_train.METHOD, config, workdir)
    assert results["evaluation"]["train_steps"] == best
    assert results["evaluation"]["checkpoint"] == "best (lowest validation val_score)"
    # The scoring time goes to its own file: metrics.json stays what a resumed run reproduces.
    timing = json.load(open(os.path.join(workdir, "eval", "timing.json")))
    assert timing["test_examples"] == results["evaluation"]["test_examples"] and timing["test_scoring_s"] > 0
    assert "test_scoring_s" not in open(os.path.join(workdir, "eval", "metrics.json")).read()


def test_python_api_scores_equal_the_evaluation_scores(trained):
    from anomaly_core.serving import api

    config, workdir, root, _ = trained
    program.evaluate(gon_train.METHOD, config, workdir)
    with open(os.path.join(workdir, "eval", "scores.csv"), newline="") as f:
        evaluated = {r["path"]: float(r["score"]) for r in csv.DictReader(f)}
    detector = api.load(workdir)
    paths = sorted(evaluated)
    result = detector.score(paths)
    assert result.paths == paths
    np.testing.assert_allclose(result.scores, [evaluated[p] for p in paths], rtol=1e-6)
    assert result.anomaly_maps.shape == (len(paths), 28, 28) and result.reconstructions.shape == (len(paths), 28, 28, 1)
    thr = json.load(open(os.path.join(workdir, "eval", "metrics.json")))["thresholds"]["image"]["value"]
    np.testing.assert_array_equal(result.anomalous, result.scores > thr)
    np.testing.assert_allclose(result.normalised, result.scores / thr)
    # Arrays: the same pixels as the files give the same scores (uint8 in, eval transform inside).
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[:3]])
    np.testing.assert_allclose(detector.score(pixels).scores, result.scores[:3], rtol=1e-6)
    assert detector.score(str(os.path.dirname(paths[0]))).scores.shape[0] >= 1  # a folder


LOAD_WITH_JAX_ONLY = """
import json, sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], 'rb').read())
images = np.load(sys.argv[2])
scores, maps = exported.call(images)
np.savez(sys.argv[3], scores=np.asarray(scores), maps=np.asarray(maps))
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('anomaly_core', 'flax', 'gon_jax', 'optax'))))
"""


def test_stablehlo_export_reproduces_the_scores_in_a_process_with_only_jax(trained, tmp_path):
    import subprocess
    import sys

    from anomaly_core.serving import api, export

    config, workdir, _, images_dir = trained
    out = export.export_run(workdir, None, str(tmp_path / "export"))
    meta = json.load(open(os.path.join(out, "export.json")))
    assert meta["input"]["shape"] == ["batch", 28, 28, 1] and meta["input"]["value_range"] == [0.0, 1.0]
    assert meta["threshold"] == json.load(open(os.path.join(workdir, "eval", "metrics.json")))["thresholds"][
        "image"]["value"]
    assert "cpu" in meta["platforms"]
    detector = api.load(workdir)
    paths = sorted(os.path.join(images_dir, f) for f in os.listdir(images_dir))
    expected = detector.score(paths)
    # The same model inputs the evaluation builds (resized, gray, value range), for any batch size.
    from anomaly_core import data as data_lib

    split = data_lib.load_image_folder(images_dir, detector.config.data)
    batch = next(iter(data_lib.eval_batches(detector.config.data, split, batch_size=len(paths))))
    np.save(tmp_path / "images.npy", np.asarray(batch["image"])[np.asarray(batch["valid"], bool)])
    proc = subprocess.run([sys.executable, "-c", LOAD_WITH_JAX_ONLY, os.path.join(out, "model.jax_export"),
                           str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []  # nothing of this project or Flax imported
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-4)
    np.testing.assert_allclose(got["maps"], expected.anomaly_maps, rtol=1e-3, atol=1e-3 * expected.anomaly_maps.max())


def test_predict_output_a_person_can_act_on(trained, tmp_path, monkeypatch):
    from anomaly_core.evaluation import evaluation, visualise

    config, workdir, root, images = trained
    program.evaluate(gon_train.METHOD, config, workdir)
    pixel_thr = json.load(open(os.path.join(workdir, "eval", "metrics.json")))["thresholds"]["pixel"]["value"]
    ranges = []
    real_panel = visualise.panel
    monkeypatch.setattr(visualise, "panel", lambda *a, **k: ranges.append(k["map_range"]) or real_panel(*a, **k))
    out = str(tmp_path / "predictions")
    folder = predict.predict(gon_train.METHOD, config, workdir, images, out)
    assert folder == out
    # One colour scale for every heatmap, with the pixel threshold at its middle.
    assert ranges and set(ranges) == {(0.0, 2 * pixel_thr)} == {evaluation.heatmap_range(pixel_thr)}
    rows = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
    names = sorted(os.listdir(out))
    stems = [n[: -len("_heatmap.png")] for n in names if n.endswith("_heatmap.png")]
    assert len(stems) == len(rows) == 3 and sorted(n for n in names if n.endswith("_mask.png")) == [
        f"{s}_mask.png" for s in stems]
    for r in rows:
        assert float(r["normalised_score"]) == pytest.approx(float(r["score"]) / float(r["threshold"]), rel=1e-5)
    # Predicting a second, smaller set replaces the folder whole: files and CSV agree.
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(os.path.join(images, sorted(os.listdir(images))[0]), one / "x.png")
    predict.predict(gon_train.METHOD, config, workdir, str(one), out)
    assert len(list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))) == 1
    assert sorted(os.listdir(out)) == [output_folder.MARKER, "00000_x_heatmap.png", "00000_x_mask.png",
                                       "predictions.csv"]
    # A folder of the user's own files is never replaced.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds files this program did not write"):
        predict.predict(gon_train.METHOD, config, workdir, str(one), str(mine))
    assert (mine / "notes.txt").read_text() == "keep"


def test_non_square_inputs_are_named_in_a_warning(trained, tmp_path, caplog):
    config, workdir, _, _ = trained
    folder = tmp_path / "wide"
    folder.mkdir()
    write_image(str(folder / "wide.png"), noise_image(np.random.default_rng(1), 28, 56))
    predict.predict(gon_train.METHOD, config, workdir, str(folder), str(tmp_path / "out"))
    assert "1 of 1 images are not square and were resized to 28x28" in caplog.text and "56x28" in caplog.text


def test_best_checkpoint_that_does_not_verify_falls_back_to_the_newest_that_does(trained, tmp_path, caplog):
    config, workdir, _, _ = trained
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    mesh = parallel.make_mesh()
    _, best, how = program.restore_for_inference(gon_train.METHOD, config, copy, mesh)
    assert how.startswith("best")
    flip_byte_in_largest_file(os.path.join(copy, "checkpoints", str(best), "state"))
    _, step, how = program.restore_for_inference(gon_train.METHOD, config, copy, mesh)
    assert how == "latest (the best checkpoint does not verify)" and step != best
    assert f"checkpoint step {best}" in caplog.text


def test_a_run_scans_each_data_folder_once(tmp_path, monkeypatch):
    """Train, validation, progress images, evaluation and the baseline all use the run's one
    `Splits`: every folder of the dataset is listed exactly once per run."""
    root = str(tmp_path / "data")
    make_tree(root, n_train=8, n_test_good=3, size=(28, 28), defects={"crack": 2})
    config = _tiny(root)
    listed = collections.Counter()
    real_listdir = os.listdir

    def counting_listdir(path="."):
        if os.fspath(path).startswith(root):
            listed[os.path.relpath(os.fspath(path), root)] += 1
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    program.train_and_evaluate(gon_train.METHOD, config, str(tmp_path / "run"))
    widget = os.path.join("widget", "")
    assert {f"{widget}train", f"{widget}train/good", f"{widget}test", f"{widget}test/good",
            f"{widget}test/crack"} <= set(listed), listed
    assert set(listed.values()) == {1}, listed


def _copy_run(workdir: str, dst: str, **edits) -> str:
    """A copy of the trained run whose config.json has the dotted `edits` (e.g. data__value_range)."""
    shutil.copytree(workdir, dst, ignore=shutil.ignore_patterns(".lock", ".*.lock"))
    path = os.path.join(dst, "config.json")
    with open(path) as f:
        saved = json.load(f)
    for dotted, value in edits.items():
        section, key = dotted.split("__")
        saved[section][key] = value
    with open(path, "w") as f:
        json.dump(saved, f)
    return dst


def _tree_bytes(folder: str) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(r, f), folder): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(folder) for f in fs}


def test_value_range_override_at_evaluation_is_refused_naming_both_values(trained, tmp_path):
    """Issue 29, item 4: a network trained on one value range scored on another gives wrong
    scores without any error; the override (or config.json edited) is refused, eval/ kept."""
    from anomaly_core.program import run_config

    config, workdir, _, _ = trained
    lo, hi = config.data.value_range
    other_range = (0.0, 1.0) if lo < 0 else (-1.0, 1.0)
    given = config.copy_and_resolve_references()
    given.data.value_range = other_range
    with pytest.raises(ValueError, match=rf"--config.data.value_range={re.escape(repr(other_range))} differs from "
                                         rf"the run in .*trained with data.value_range=\({lo}, {hi}\)"):
        run_config.for_inference(workdir, given, explicit=["data.value_range"])
    for name, value in (("data.image_size", 32), ("data.channels", 3)):
        changed = config.copy_and_resolve_references()
        section, key = name.split(".")
        changed[section][key] = value
        with pytest.raises(ValueError, match=rf"--config.{name}={value} differs from the run"):
            run_config.for_inference(workdir, changed, explicit=[name])
    # The data root and the split selection stay overridable.
    moved = config.copy_and_resolve_references()
    moved.data.root, moved.data.val_fraction = "/elsewhere", 0.5
    got = run_config.for_inference(workdir, moved, explicit=["data.root", "data.val_fraction"])
    assert (got.data.root, got.data.val_fraction) == ("/elsewhere", 0.5)
    # The same value edited into config.json: the checkpoint's own record refuses it.
    copy = _copy_run(workdir, str(tmp_path / "run"), data__value_range=list(other_range))
    before = _tree_bytes(os.path.join(copy, "eval"))
    edited = run_config.for_inference(copy, None)
    with pytest.raises(program.CheckpointError, match=r"does not fit these settings: config.data.value_range="
                                                      rf"\[{lo}, {hi}\] there, \[{other_range[0]}, 1.0\] in the "
                                                      "config"):
        program.evaluate(gon_train.METHOD, edited, copy)
    assert _tree_bytes(os.path.join(copy, "eval")) == before


def test_checkpoint_of_another_width_is_named_as_not_fitting_never_unreadable(trained, tmp_path, caplog):
    """Issue 29, item 9: config.json edited to another width; every checkpoint is readable."""
    from anomaly_core.program import run_config
    from anomaly_core.training.checkpointing import Checkpointer

    config, workdir, _, _ = trained
    copy = _copy_run(workdir, str(tmp_path / "run"), model__ngf=8)
    steps = sorted(os.listdir(os.path.join(copy, "checkpoints")))
    edited = run_config.for_inference(copy, None)
    with pytest.raises(program.CheckpointError, match=r"does not fit these settings: config.model.ngf=4 there, "
                                                      r"8 in the config") as err:
        program.evaluate(gon_train.METHOD, edited, copy)
    assert "unreadable" not in str(err.value) and "Move" not in str(err.value)
    # Training's restore (e.g. --allow_changes) reads the checkpoint and says why it does not fit, once.
    mesh = parallel.make_mesh()
    ckpt = Checkpointer(copy)
    try:
        with pytest.raises(program.CheckpointError, match=r"checkpoint step \d+ in .* does not fit the settings: "
                                                          r"config.model.ngf=4 there, 8 in the config"):
            ckpt.restore(program.abstract_state(gon_train.METHOD, edited, mesh), misfit=program.misfit(edited),
                         target=program.restore_target(gon_train.METHOD))
    finally:
        ckpt.close()
    assert "unreadable" not in caplog.text
    assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == steps  # nothing set aside


def test_fresh_state_compiles_one_program_whoever_calls_it(trained):
    """Training calls program.fresh_state inside the mesh context, the converter's import
    outside it: both must compile the same initialisation, so the second call is served
    by the compilation cache instead of compiling again."""
    import jax
    from jax import monitoring

    from anomaly_core import data as data_lib

    config = trained[0]
    mesh, splits = parallel.make_mesh(), data_lib.Splits(config.data)
    events = []
    listener = lambda name, **kwargs: events.append(name)  # noqa: E731
    saved = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even this fast program
    monitoring.register_event_listener(listener)
    try:
        with jax.set_mesh(mesh):
            program.fresh_state(gon_train.METHOD, config, mesh, splits)
        events.clear()
        program.fresh_state(gon_train.METHOD, config, mesh, splits)
    finally:
        monitoring.unregister_event_listener(listener)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", saved)
    requests = events.count("/jax/compilation_cache/compile_requests_use_cache")
    assert requests >= 1 and events.count("/jax/compilation_cache/cache_hits") == requests, events
