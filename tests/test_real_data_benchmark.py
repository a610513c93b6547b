"""benchmarks/real_data.py: the launch command, metrics.json parsing and the table, on a fake finished run."""
import json
import os

import pytest

from benchmarks import real_data

METRICS = {
    "scalars": {"image_auroc": 0.86, "pixel_auroc": 0.975, "pixel_aupro": 0.76},
    "baseline": {"image_auroc": 0.72, "pixel_auroc": 0.91, "pixel_aupro": 0.41},
}
TIMING = {"test_examples": 100, "test_scoring_s": 2.5}


def _fake_run(runs: str, name: str) -> str:
    workdir = os.path.join(runs, name)
    os.makedirs(os.path.join(workdir, "eval", "panels"))
    os.makedirs(os.path.join(workdir, "progress"))
    with open(os.path.join(workdir, "eval", "metrics.json"), "w") as f:
        json.dump(METRICS, f)
    with open(os.path.join(workdir, "eval", "timing.json"), "w") as f:
        json.dump(TIMING, f)
    for grid in ("adversarial_000400_samples.png", "encoder_000300_reconstructions.png"):
        open(os.path.join(workdir, "progress", grid), "wb").close()
    return workdir


def test_command_is_the_users_launch_line():
    assert real_data.command("gon", "transistor", 1, "/data/mvtec", "runs/x", ["train.steps=10"]) == [
        "launch.py", "--config=configs/gon_mvtec.py:cpu", "--workdir=runs/x", "--config.data.root=/data/mvtec",
        "--config.data.categories=transistor", "--config.seed=1", "--config.train.steps=10"]


def test_row_from_metrics_takes_both_sides_and_the_differences():
    row = real_data.row_from_metrics(METRICS, TIMING, method="gon", seed=0)
    assert row["method"] == "gon" and row["seed"] == 0
    assert (row["image_auroc"], row["baseline_image_auroc"], row["delta_image_auroc"]) == (0.86, 0.72, 0.14)
    assert (row["pixel_auroc"], row["baseline_pixel_auroc"], row["delta_pixel_auroc"]) == (0.975, 0.91, 0.065)
    assert (row["pixel_aupro"], row["delta_pixel_aupro"]) == (0.76, 0.35)
    assert row["ms_per_image"] == 25.0
    assert real_data.row_from_metrics(METRICS)["ms_per_image"] is None  # no timing.json: no figure
    # a run without masks or timing: those cells stay empty, nothing is made up
    sparse = real_data.row_from_metrics({"scalars": {"image_auroc": 0.5}, "baseline": {}})
    assert sparse["pixel_auroc"] is None and "delta_image_auroc" not in sparse and sparse["ms_per_image"] is None


def test_tables_only_reads_finished_runs_and_writes_json_and_markdown(tmp_path):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "results" / "real")
    workdir = _fake_run(runs, real_data.run_name("gon", "transistor", 0))
    with open(workdir + ".run.json", "w") as f:  # what the benchmark wrote when it ran it
        json.dump({"wall_s": 600.0, "minutes": 10.0, "cache": "empty"}, f)
    real_data.main(["--root", str(tmp_path), "--categories", "transistor", "--methods", "gon", "--seeds", "0",
                    "--runs", runs, "--out", out, "--tables-only"])
    with open(out + ".json") as f:
        rows = json.load(f)["rows"]
    assert len(rows) == 1 and rows[0]["workdir"] == workdir
    assert rows[0]["ms_per_image"] == 25.0  # from eval/timing.json
    assert (rows[0]["wall_s"], rows[0]["minutes"], rows[0]["cache"]) == (600.0, 10.0, "empty")
    assert rows[0]["pictures"]["grids"] == {
        "samples": os.path.join(workdir, "progress", "adversarial_000400_samples.png"),
        "reconstructions": os.path.join(workdir, "progress", "encoder_000300_reconstructions.png")}
    md = open(out + ".md").read()
    assert "| gon | transistor | 0 | 0.86 | 0.72 | 0.14 | 0.975 | 0.91 | 0.065 | 0.76 | 0.41 |" in md
    assert os.path.join(workdir, "eval", "panels") in md


def test_rerun_never_resumes_or_deletes_an_existing_run(tmp_path):
    runs = str(tmp_path / "runs")
    workdir = _fake_run(runs, real_data.run_name("cae", "transistor", 0))
    with pytest.raises(FileExistsError, match="move it away"):
        real_data.main(["--root", str(tmp_path), "--categories", "transistor", "--methods", "cae",
                        "--runs", runs, "--out", str(tmp_path / "o"), "--rerun"])
    assert os.path.exists(os.path.join(workdir, "eval", "metrics.json"))


def test_timing_file_is_the_one_evaluation_writes():
    from anomaly_core.evaluation import evaluation

    assert real_data.TIMING_FILE == evaluation.TIMING_FILE


def test_a_run_without_evaluation_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gon_transistor_s0.*metrics\.json"):
        real_data.main(["--root", str(tmp_path), "--categories", "transistor", "--methods", "gon",
                        "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--tables-only"])


@pytest.mark.parametrize("flags, message", [
    (["--methods", "gan"], "unknown"), (["--seeds", "a"], "integers"), (["--config", "gon"], "METHOD=FILE")])
def test_bad_flags_are_named(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        real_data.parse_args(["--root", str(tmp_path), "--categories", "transistor", *flags])
    assert message in capsys.readouterr().err
