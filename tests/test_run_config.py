"""A workdir describes its run: config.json round trip, eval/predict read it back, and an
override that changes the trained network is refused naming both values."""
from __future__ import annotations

import glob
import importlib.util
import json
import os

import pytest

from anomaly_core.program import run_config
from tools import fault_drill

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GON = ["--config=configs/gon_quickstart.py:digits", "--config.model.ngf=4", "--config.train.batch_size=4",
       "--config.train.steps=2", "--config.train.checkpoint_every=2", "--config.eval.batch_size=16",
       "--config.data.digits_per_anomalous_class=1", "--config.data.digits_test_fraction=0.1"]


def _load(path: str):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _json(config) -> str:
    return json.dumps(config.to_dict(), default=str, sort_keys=True)


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                        if not p.endswith(("__init__.py", "common.py", "_base.py"))))
def test_every_shipped_config_round_trips(tmp_path, path):
    config = _load(path)
    run_config.write(str(tmp_path), config)
    assert _json(run_config.read(str(tmp_path))) == _json(config)
    assert _json(run_config.for_inference(str(tmp_path), config, [])) == _json(config)


def test_run_settings_come_from_the_workdir_eval_settings_from_the_command_line(tmp_path):
    trained = _load(os.path.join(ROOT, "configs", "quickstart.py"))
    trained.model.width = 8
    trained.data.image_size = trained.model.image_size = 32
    run_config.write(str(tmp_path), trained)
    given = _load(os.path.join(ROOT, "configs", "quickstart.py"))  # width 4, 64 px
    given.eval.batch_size = 3
    given.data.root = "/moved/data"
    config = run_config.for_inference(str(tmp_path), given, ["eval.batch_size", "data.root"])
    assert (config.model.width, config.data.image_size, config.model.image_size) == (8, 32, 32)
    assert config.eval.batch_size == 3 and config.data.root == "/moved/data"


def test_a_config_json_from_before_a_setting_existed_gets_the_value_the_run_used(tmp_path):
    """f-UNetGAN runs written before config.model.spectral_norm existed used torch's spectral
    norm: their config.json gets 'torch' (Method.legacy.unrecorded_settings), with or without --config,
    not today's default 'biggan', which their checkpoints do not fit."""
    trained = _load(os.path.join(ROOT, "configs", "quickstart.py"))
    del trained.model["spectral_norm"]
    run_config.write(str(tmp_path), trained)
    assert run_config.for_inference(str(tmp_path), None).model.spectral_norm == "torch"
    given = _load(os.path.join(ROOT, "configs", "quickstart.py"))
    assert given.model.spectral_norm == "biggan"
    assert run_config.for_inference(str(tmp_path), given, []).model.spectral_norm == "torch"
    # A setting the run recorded is kept as recorded.
    trained.model.spectral_norm = "biggan"
    run_config.write(str(tmp_path), trained)
    assert run_config.for_inference(str(tmp_path), None).model.spectral_norm == "biggan"


def test_override_that_changes_the_trained_network_is_refused(tmp_path):
    trained = _load(os.path.join(ROOT, "configs", "quickstart.py"))
    run_config.write(str(tmp_path), trained)
    given = _load(os.path.join(ROOT, "configs", "quickstart.py"))
    given.model.width = 8
    with pytest.raises(ValueError, match=r"--config.model.width=8 differs from the run in .* trained with "
                                         r"model.width=4"):
        run_config.for_inference(str(tmp_path), given, ["model.width"])
    # The same value as the run's is no change.
    given.model.width = 4
    assert run_config.for_inference(str(tmp_path), given, ["model.width"]).model.width == 4


@pytest.fixture(scope="module")
def launcher():
    return fault_drill.Launcher("fork", cwd=ROOT)


def test_eval_and_predict_need_no_config_and_refuse_a_changed_width(launcher, tmp_path):
    workdir = str(tmp_path / "run")
    code, text = launcher.run([*GON, f"--workdir={workdir}"], str(tmp_path / "train.log"))
    assert code == 0, text[-3000:]
    trained = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
    code, text = launcher.run([f"--workdir={workdir}", "--mode=eval"], str(tmp_path / "eval.log"))
    assert code == 0, text[-3000:]
    assert json.load(open(os.path.join(workdir, "eval", "metrics.json")))["scalars"] == trained["scalars"]
    # A config file with other network settings (ngf 16) is overridden by the run's own (ngf 4).
    code, text = launcher.run(["--config=configs/gon_quickstart.py:digits", f"--workdir={workdir}", "--mode=eval",
                               "--config.eval.max_panels=0"], str(tmp_path / "eval2.log"))
    assert code == 0, text[-3000:]
    code, text = launcher.run(["--config=configs/gon_quickstart.py:digits", f"--workdir={workdir}", "--mode=eval",
                               "--config.model.ngf=8"], str(tmp_path / "eval3.log"))
    assert code == 2 and "--config.model.ngf=8 differs from the run in" in text and "model.ngf=4" in text, text[-2000:]
    assert "Traceback" not in text and "unreadable" not in text


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                        if not p.endswith(("__init__.py", "common.py", "_base.py"))))
def test_every_setting_of_every_config_has_a_meaning(path):
    from anomaly_core.program import methods
    from anomaly_core.run import config_docs

    config = _load(path)
    lines = config_docs.describe(config, methods.for_config(config).settings.files).splitlines()
    assert lines and all("  # " in line for line in lines), [line for line in lines if "  # " not in line]


def test_mode_config_prints_the_resolved_settings_with_meanings(launcher, tmp_path):
    code, text = launcher.run(["--config=configs/quickstart.py", "--mode=config", "--config.train.n_critic=3"],
                              str(tmp_path / "config.log"))
    assert code == 0, text[-2000:]
    assert "config.train.n_critic = 3  # discriminator updates per generator update" in text
