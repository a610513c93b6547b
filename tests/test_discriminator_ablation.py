"""benchmarks/discriminator_ablation.py: the four critics' commands, the encoder-only evaluation
in a copy of each run, and the table, on fake finished runs (no training)."""
import json
import os
import shlex
import subprocess

import pytest

from benchmarks import discriminator_ablation as ablation
from benchmarks import real_data

REFINED = {"scalars": {"image_auroc": 0.73, "pixel_auroc": 0.94, "pixel_aupro": 0.53},
           "baseline": {"image_auroc": 0.72, "pixel_auroc": 0.91, "pixel_aupro": 0.41}}
FAST = {"scalars": {"image_auroc": 0.70, "pixel_auroc": 0.95, "pixel_aupro": 0.50},
        "baseline": {"image_auroc": 0.72, "pixel_auroc": 0.91, "pixel_aupro": 0.41}}


def _write(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _fake_trained(runs: str, block: str, attention: str) -> str:
    workdir = os.path.join(runs, ablation.critic_name("transistor", 0, block, attention))
    _write(os.path.join(workdir, "eval", "metrics.json"), REFINED)
    _write(os.path.join(workdir, "eval", "timing.json"), {"test_examples": 100, "test_scoring_s": 25.0})
    _write(os.path.join(workdir, "checkpoints", "1500", "state.json"), {"step": 1500})
    _write(workdir + ".run.json", {"wall_s": 960.0, "minutes": 16.0, "cache": "empty"})
    return workdir


def test_each_critic_is_the_cpu_preset_with_two_overrides():
    assert ablation.critic_sets("conv", "cbam") == ["model.d_block=conv", "model.d_attention=cbam"]
    argv = real_data.command("funetgan", "transistor", 0, "/data", "runs/x", ablation.critic_sets("conv", "none"))
    assert argv[1] == "--config=configs/mvtec_bottle.py:cpu"
    assert argv[-2:] == ["--config.model.d_block=conv", "--config.model.d_attention=none"]
    assert sorted(ablation.CRITICS) == [("conv", "cbam"), ("conv", "none"), ("residual", "cbam"), ("residual", "none")]


def test_encoder_only_is_the_training_command_in_eval_mode_without_refinement():
    training = ["launch.py", "--config=configs/mvtec_bottle.py:cpu", "--workdir=runs/a", "--config.seed=1"]
    assert ablation.encoder_only_command(training, "runs/a_encoder_only") == [
        "launch.py", "--config=configs/mvtec_bottle.py:cpu", "--config.seed=1", "--workdir=runs/a_encoder_only",
        "--mode=eval", "--config.eval.refine_steps=0"]


def test_encoder_only_evaluates_a_copy_and_leaves_the_refined_run_as_it_was(tmp_path, monkeypatch):
    runs = str(tmp_path / "runs")
    workdir = _fake_trained(runs, "residual", "none")
    before = open(os.path.join(workdir, "eval", "metrics.json")).read()
    calls = []
    real_run = subprocess.run

    def fake_run(argv, **kwargs):
        if "launch.py" not in argv:  # platform's own probes (machine_info)
            return real_run(argv, **kwargs)
        calls.append(argv)
        target = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
        assert os.path.exists(os.path.join(target, "checkpoints", "1500", "state.json"))  # copied
        assert not os.path.exists(os.path.join(target, "eval"))  # the refined evaluation is not copied
        _write(os.path.join(target, "eval", "metrics.json"), FAST)
        _write(os.path.join(target, "eval", "timing.json"), {"test_examples": 100, "test_scoring_s": 5.0})
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(ablation.subprocess, "run", fake_run)
    out = str(tmp_path / "table")
    ablation.main(["--root", str(tmp_path), "--categories", "transistor", "--critics", "residual-none",
                   "--runs", runs, "--out", out])
    assert len(calls) == 1 and calls[0][-2:] == ["--mode=eval", "--config.eval.refine_steps=0"]
    assert open(os.path.join(workdir, "eval", "metrics.json")).read() == before
    rows = json.load(open(out + ".json"))["rows"]
    assert [(r["scoring"], r["image_auroc"], r["pixel_auroc"], r["ms_per_image"]) for r in rows] == [
        ("refined", 0.73, 0.94, 250.0), ("encoder only", 0.70, 0.95, 50.0)]
    assert rows[1]["minutes"] == 16.0 and rows[1]["d_block"] == "residual" and rows[1]["d_attention"] == "none"
    assert shlex.split(rows[1]["command"])[-1] == "--config.eval.refine_steps=0"
    md = open(out + ".md").read()
    assert "| residual | none | refined | 0 | 0.73 | 0.01 | 0.94 | 0.03 | 0.53 | 0.12 | 16 | 250 |" in md
    assert "| residual | none | encoder only | 0 | 0.7 | -0.02 | 0.95 | 0.04 | 0.5 | 0.09 | 16 | 50 |" in md
    # A second pass re-reads both evaluations and runs nothing.
    ablation.main(["--root", str(tmp_path), "--categories", "transistor", "--critics", "residual-none",
                   "--runs", runs, "--out", out])
    assert len(calls) == 1


def test_tables_only_names_a_missing_encoder_only_evaluation(tmp_path):
    runs = str(tmp_path / "runs")
    _fake_trained(runs, "conv", "cbam")
    with pytest.raises(FileNotFoundError, match=r"conv-cbam_encoder_only.*metrics\.json"):
        ablation.main(["--root", str(tmp_path), "--categories", "transistor", "--critics", "conv-cbam",
                       "--runs", runs, "--out", str(tmp_path / "o"), "--tables-only"])


def test_unknown_critic_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablation.parse_args(["--root", str(tmp_path), "--categories", "transistor", "--critics", "conv-se"])
    assert "'conv-se' is not one of conv-none, conv-cbam, residual-none, residual-cbam" in capsys.readouterr().err
