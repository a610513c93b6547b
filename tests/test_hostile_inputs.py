"""Hostile and malformed inputs (tools/hostile_inputs.py): each one is read correctly
or rejected with a message naming the file or setting; none crashes the program."""
from __future__ import annotations

import csv
import os
import re

import numpy as np
import pytest

from anomaly_core import data as data_lib
from tools import fault_drill, hostile_inputs
from tools.hostile_inputs import HANDLED, REJECTED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 8
GON = ["--config=configs/gon_quickstart.py:digits", "--config.model.ngf=4", "--config.train.batch_size=4",
       "--config.train.steps=2", "--config.train.checkpoint_every=2",
       "--config.eval.batch_size=16", "--config.data.digits_per_anomalous_class=1",
       "--config.data.digits_test_fraction=0.1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hostile"))
    return root, hostile_inputs.write_corpus(root)


@pytest.fixture(scope="module")
def launcher():
    return fault_drill.Launcher("fork", cwd=ROOT)


def data_config(root: str = ""):
    cfg = data_lib.default_data_config()
    cfg.source, cfg.root, cfg.image_size, cfg.channels = "folder", root, SIZE, 3
    cfg.val_fraction, cfg.augment, cfg.read_threads = 0.0, "none", 1
    return cfg


def expected_rgb(case) -> np.ndarray:
    c = np.asarray(case.colour, np.float32)
    return np.repeat(c, 3) if c.size == 1 else c


def check_reason(case, reason: str) -> str:
    """'' when a skip `reason` (listed beside its file) says what the case expects, else what is wrong."""
    return "" if case.reason.lower() in reason.lower() else f"reason {reason!r} (expected {case.reason!r})"


def image_outcomes(cases, corpus_root) -> dict[str, str]:
    """Every image case through load_image_folder + eval batches and load_split + train_iterator."""
    out: dict[str, str] = {}
    folder = data_lib.load_image_folder(os.path.join(corpus_root, "images"), data_config())
    pixels = {}
    for batch in folder.batches(8):
        for i, img in zip(batch["index"][batch["valid"]], batch["image"][batch["valid"]]):
            pixels[folder.paths[int(i)]] = img
    skipped = dict(folder.skipped)
    train_cfg = data_config(os.path.join(corpus_root, "train"))
    train = data_lib.load_split(train_cfg, "train")
    train_names = {os.path.basename(r.path) for r in train.records}
    train_skipped = {os.path.basename(p): r for p, r in train.skipped}
    batch = next(data_lib.train_iterator(train_cfg, global_batch_size=len(train), seed=0))
    assert batch["image"].shape == (len(train), SIZE, SIZE, 3)
    assert np.isfinite(batch["image"]).all() and 0 <= batch["image"].min() <= batch["image"].max() <= 1
    for case in (c for c in cases if c.kind == "image"):
        if case.expect == HANDLED:
            if case.path not in pixels or case.name not in train_names:
                reasons = skipped.get(case.path), train_skipped.get(case.name)
                out[case.name] = f"not read (skip reasons: {reasons})"
                continue
            err = float(np.abs(pixels[case.path] - expected_rgb(case)).max())
            out[case.name] = HANDLED if err <= case.tolerance + 1e-5 else f"wrong pixels (max error {err:.4f})"
        else:
            problems = [
                check_reason(case, skipped[case.path]) if case.path in skipped else "read instead of rejected",
                check_reason(case, train_skipped[case.name]) if case.name in train_skipped
                else "kept in the training split",
            ]
            problems = [p for p in problems if p]
            out[case.name] = REJECTED if not problems else "; ".join(problems)
    return out


def mask_outcome(case) -> str:
    cfg = data_config(case.path)
    try:
        test = data_lib.load_split(cfg, "test")
        masks = {}
        for batch in data_lib.eval_batches(cfg, test, batch_size=4):
            for i, m in zip(batch["index"][batch["valid"]], batch["mask"][batch["valid"]]):
                masks[test.records[int(i)].defect] = m
    except data_lib.DataError as e:
        if case.expect == HANDLED:
            return f"rejected: {e}"
        return REJECTED if case.reason in str(e) and "000" in str(e) and case.path in str(e) else f"message {e}"
    if case.expect == REJECTED:
        return "read instead of rejected"
    binary = all(set(np.unique(m)) <= {0.0, 1.0} for m in masks.values())
    fraction = float(masks["crack"].mean())
    ok = binary and abs(fraction - case.colour[0]) < 1e-6 and masks["good"].max() == 0
    return HANDLED if ok else f"mask values {sorted(np.unique(masks['crack']))}, defect fraction {fraction}"


def checkpoint_outcome(case) -> str:
    from anomaly_core.interop.torch_import import TorchImportError, load_torch_checkpoint

    try:
        state = load_torch_checkpoint(case.path)
    except TorchImportError as e:
        if case.expect == HANDLED:
            return f"rejected: {e}"
        return REJECTED if case.reason in str(e) and case.path in str(e) else f"message {e}"
    if case.expect == REJECTED:
        return "loaded instead of refused"
    return HANDLED if sorted(state) == ["conv.bias", "conv.weight"] else f"keys {sorted(state)}"


def test_hostile_corpus_is_handled_or_rejected_never_a_crash(corpus):
    root, cases = corpus
    outcomes = image_outcomes(cases, root)
    for case in cases:
        if case.kind == "mask":
            outcomes[case.name] = mask_outcome(case)
        elif case.kind == "checkpoint":
            outcomes[case.name] = checkpoint_outcome(case)
    assert not os.path.exists(hostile_inputs.code_ran_marker(root)), "a pickle's code ran when loading it"
    expected = {c.name: c.expect for c in cases}
    wrong = {k: v for k, v in outcomes.items() if v != expected[k]}
    handled = sum(v == HANDLED for v in outcomes.values())
    rejected = sum(v == REJECTED for v in outcomes.values())
    kinds = {k: sum(c.kind == k for c in cases) for k in ("image", "mask", "checkpoint")}
    print(f"\nhostile inputs: tried {len(outcomes)} ({kinds}), handled {handled}, rejected {rejected}, "
          f"crashes {len(wrong)}")
    for name, what in wrong.items():
        print(f"  {name!r}: expected {expected[name]}, got {what}")
    assert len(outcomes) == len(cases) and all(kinds.values())
    assert len(wrong) == 0, wrong


# (override, what the message must name). absl ends its own flag errors with exit code 1; the
# program's user errors use 2.
CONFIG_CASES = [
    pytest.param("--config.train.batch_size=abc", "config.train.batch_size", id="wrong-type"),
    pytest.param("--config.data.channels=2", "config.data.channels", id="invalid-value"),
    pytest.param("--config.train.bach_size=4", "bach_size", id="unknown-key"),
    pytest.param("--config.train.steps=0", "config.train.steps must be an integer >= 1, got 0", id="zero-steps"),
    pytest.param("--config.seed=-1", "config.seed must be an integer >= 0, got -1", id="negative-seed"),
    pytest.param("--config.method=nope", "config.method='nope' is not one of ['funetgan', 'gon'] "
                 "(in --config=configs/gon_quickstart.py:digits)", id="unknown-method"),
]


@pytest.mark.parametrize("override, names", CONFIG_CASES)
def test_bad_config_override_is_one_clear_error(launcher, tmp_path, override, names):
    code, text = launcher.run([*GON, f"--workdir={tmp_path / 'cfg'}", override], str(tmp_path / "run.log"))
    print(f"\n{override}: exit code {code}, traceback {'Traceback' in text}")
    assert "Traceback" not in text, text[-1500:]
    assert code in (1, 2) and names in text, text[-1500:]
    assert not os.path.exists(tmp_path / "cfg" / "checkpoints")  # rejected before training


def test_predict_end_to_end_on_the_corpus(corpus, launcher, tmp_path):
    root, cases = corpus
    workdir = str(tmp_path / "gon")
    code, text = launcher.run([*GON, f"--workdir={workdir}", "--config.eval.max_panels=1"],
                              str(tmp_path / "train.log"))
    assert code == 0, text[-3000:]
    images = os.path.join(root, "images")
    code, text = launcher.run([*GON, f"--workdir={workdir}", "--mode=predict", f"--input={images}"],
                              str(tmp_path / "predict.log"))
    handled = sorted(os.fsencode(c.path) for c in cases if c.kind == "image" and c.expect == HANDLED)
    rejected = [c for c in cases if c.kind == "image" and c.expect == REJECTED]
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    with open(os.path.join(workdir, "predict", "predictions.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.fsencode(r["path"]) for r in rows) == handled
    assert all(np.isfinite(float(r["score"])) and r["predicted_label"] in ("0", "1") for r in rows)
    heatmaps = [f for f in os.listdir(os.path.join(workdir, "predict")) if f.endswith("_heatmap.png")]
    assert len(heatmaps) == len(handled)
    for case in rejected:
        # stderr writes a non-UTF-8 name's surrogates as backslash escapes.
        shown = case.path.encode("utf-8", "backslashreplace").decode()
        assert re.search(rf"Skipping {re.escape(shown)}: .*{re.escape(case.reason)}", text, re.I), case.name
    print(f"\npredict end to end: {len(rows)} images scored, {len(rejected)} skipped with a reason, exit code {code}")


@pytest.mark.parametrize("config, code, message", [
    ("configs/nope.py", 2, "error: --config=configs/nope.py: [Errno 2] No such file or directory"),
    ("configs/quickstart.py:bogus", 1, "unknown preset 'bogus' for configs/quickstart.py (known: long)"),
])
def test_bad_config_file_is_one_line(launcher, tmp_path, config, code, message):
    got, text = launcher.run([f"--config={config}", f"--workdir={tmp_path / 'run'}"], str(tmp_path / "run.log"))
    assert got == code and message in text, text[-1500:]
    assert "Traceback" not in text and len([line for line in text.splitlines() if line.strip()]) == 1, text


def test_no_training_step_in_all_is_refused_by_name():
    """Issue 29, item 5: f-UNetGAN with both stages at 0 steps would evaluate the untrained
    initialisation as 'checkpoint step 0'."""
    from anomaly_core import settings
    from anomaly_core.program import program
    from configs.quickstart import get_config
    from funetgan_jax import train as ft

    config = get_config()
    config.train.generator_steps, config.train.encoder_steps = 0, 0
    with pytest.raises(settings.SettingError, match=r"config.train.encoder_steps must be an integer >= 1 when "
                                                    r"config.train.generator_steps is 0, got 0"):
        program.check_config(config, ft.METHOD)
    config.train.encoder_steps = 1  # one stage may be empty (e.g. encoder_steps=0: adversarial stage only)
    program.check_config(config, ft.METHOD)
