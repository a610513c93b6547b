"""benchmarks/gpu_suite.py in its tiny CPU mode: every part is recorded (done, cut short,
skipped or not started), the results are rewritten after each part, a part over its budget
is stopped and recorded as cut short. Mechanics only: no timing thresholds."""
import json
import os

import pytest

from benchmarks import gpu_suite, train_steps


def _arg(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


def test_parts_cover_the_issues_measurements():
    parts = {p.name: p for p in gpu_suite.PARTS}
    assert sum(p.budget_s for p in gpu_suite.PARTS) <= gpu_suite.DEFAULT_TOTAL_S
    # The train parts select exactly f-UNetGAN's D, G and E steps between them (train_steps' --only rule).
    chosen = {name for p in parts.values() if p.module == "benchmarks.train_steps"
              for name in train_steps.FUNETGAN_STEPS[:3] if train_steps._selected(name, _arg(p.args, "--only"))}
    assert chosen == set(train_steps.FUNETGAN_STEPS[:3])
    for p in parts.values():
        if p.module == "benchmarks.train_steps":  # not the GON and CAE steps
            assert not any(train_steps._selected(n, _arg(p.args, "--only")) for n in ("GON step", "CAE step"))
        if p.module in ("benchmarks.train_steps", "benchmarks.inference"):
            assert _arg(p.args, "--size") == "full" and _arg(p.tiny_args, "--size") == "reduced"
        assert p.needs_torch == (p.module == "benchmarks.train_steps")
    scoring = {(_arg(p.args, "--only"), _arg(p.args, "--precision") or "float32") for p in parts.values()
               if p.module == "benchmarks.inference"}
    assert scoring == {(m, d) for m in ("funetgan", "gon") for d in ("float32", "bfloat16")}
    assert _arg(parts["loop_step"].args, "--config") == "configs/mvtec_bottle.py"
    assert _arg(parts["loop_step"].tiny_args, "--config") == "configs/mvtec_bottle.py:tiny"


def test_tiny_suite_records_every_part(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite, "torch_available", lambda: False)
    written = []
    real_write = gpu_suite.write_suite
    monkeypatch.setattr(gpu_suite, "write_suite",
                        lambda out, **kw: written.append(len(kw["records"])) or real_write(out, **kw))
    out = str(tmp_path / "suite")
    result = gpu_suite.main(["--tiny", "--out", out, "--budget", "3", "--budget", "device=120",
                             "--budget", "loop_step=0.001"])
    names = [p.name for p in gpu_suite.PARTS]
    assert written == list(range(1, len(names) + 1))  # rewritten after every part
    saved = json.loads(open(out + ".json").read())
    records = {r["part"]: r for r in saved["parts"]}
    assert list(records) == names and saved["parts"] == result["parts"]
    assert records["device"]["status"] == "done"
    assert [r["dtype"] for r in records["device"]["rows"]] == ["float32", "bfloat16"]
    assert all(r["peak_matmul_gflops"] > 0 for r in records["device"]["rows"])
    for name in ("train_d", "train_g_e"):
        assert records[name]["status"].startswith("skipped: torch not installed")
        assert not os.path.exists(f"{out}_{name}.log")  # never started
    assert records["loop_step"]["status"] == "cut short at 0 s (budget 0 s)"
    for name in ("score_funetgan_float32", "score_funetgan_bfloat16", "score_gon_float32", "score_gon_bfloat16"):
        r = records[name]
        assert r["status"].startswith("cut short at ") and r["budget_s"] == 3.0 and "rows" not in r
        assert "--tiny" not in r["command"] and "--size reduced" in r["command"]
        assert os.path.exists(r["log"]) and isinstance(r["log_tail"], str)
    md = open(out + ".md").read()
    for name in names:
        assert f"| {name} | {records[name]['status']} |" in md
    assert "#### Device: matmul peak" in md and "| float32 |" in md


def test_suite_total_budget_and_part_names(tmp_path):
    out = str(tmp_path / "s")
    result = gpu_suite.main(["--tiny", "--out", out, "--parts", "score_gon_float32,loop_step", "--total", "0"])
    assert [r["part"] for r in result["parts"]] == ["score_gon_float32", "loop_step"]
    assert all(r["status"] == "not started: the suite's 0 s were spent" for r in result["parts"])
    with pytest.raises(SystemExit):
        gpu_suite.main(["--out", out, "--parts", "nope"])
    with pytest.raises(SystemExit, match="no part 'nope'"):
        gpu_suite.main(["--out", out, "--budget", "nope=3"])
