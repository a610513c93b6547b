"""Output folders (`anomaly_core.evaluation.output_folder`) through `evaluation.predict`: a prediction
never deletes or replaces a user's files inside or beside its --output, and two predictions
into one folder at once do not break each other."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from anomaly_core.evaluation import evaluation, output_folder
from anomaly_core.training import parallel
from anomaly_core.training.checkpointing import CheckpointError
from tests.data_fixtures import make_tree, mean_score_fn, noise_image, tiny_config, write_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(root: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"data": tiny_config(root), "eval": {"batch_size": 4, "predict_heatmaps": -1}})


def predict(input_dir: str, output: str | None, workdir: str, delay: float = 0.0) -> str:
    mesh = parallel.make_mesh()
    with jax.set_mesh(mesh):
        return evaluation.predict(mean_score_fn(delay), _config(input_dir), workdir, input_dir, mesh, output)


@pytest.fixture
def images(tmp_path):
    folder = str(tmp_path / "images")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(os.path.join(folder, f"{i}.png"), noise_image(rng, 16, 16))
    return folder


def _files(folder: str) -> dict[str, bytes]:
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(base, name), "rb") as f:
                out[os.path.relpath(os.path.join(base, name), folder)] = f.read()
    return out


def test_output_holding_user_masks_is_refused_and_kept_byte_identical(images, tmp_path):
    """Issue 29, item 1: ground-truth masks end in `_mask.png` like predict's own masks."""
    masks = os.path.join(make_tree(str(tmp_path / "mvtec")), "ground_truth", "crack")
    before = _files(masks)
    assert before and all(name.endswith("_mask.png") for name in before)
    with pytest.raises(ValueError, match=rf"--output={masks} holds files this program did not write .*"
                                         r"name a new or empty folder"):
        predict(images, masks, str(tmp_path / "run"))
    assert _files(masks) == before
    assert sorted(os.listdir(os.path.dirname(masks))) == ["crack", "hole"]  # nothing staged beside


def test_user_folders_beside_the_output_are_never_touched(images, tmp_path):
    """Issue 29, item 2: `<output>.old-v1` and `<output>.partial-x` are the user's, not leftovers."""
    out = str(tmp_path / "out")
    rng = np.random.default_rng(1)
    for name in ("out.old-v1", "out.old-123", "out.partial-7", "out.partial-1-0123abcd"):
        write_image(str(tmp_path / name / "keep.png"), noise_image(rng, 4, 4))
    before = {name: _files(str(tmp_path / name)) for name in os.listdir(tmp_path) if name.startswith("out.")}
    predict(images, out, str(tmp_path / "run"))
    predict(images, out, str(tmp_path / "run"))  # replacing its own earlier prediction
    after = {name: _files(str(tmp_path / name)) for name in os.listdir(tmp_path)
             if name.startswith("out.")}
    assert after == before
    assert sorted(_files(out)) == sorted([output_folder.MARKER, "predictions.csv"]
                                         + [f"{i:05d}_{i}_heatmap.png" for i in range(3)])


def test_the_program_replaces_and_cleans_up_only_its_own_folders(tmp_path):
    final = str(tmp_path / "eval")
    with output_folder.replacing(final, "--output") as staging:
        open(os.path.join(staging, "a.txt"), "w").write("first")
    assert output_folder.owner_token(final) is not None
    # A run killed between the two renames leaves the previous folder as .old-<pid>-<token>.
    token = output_folder.owner_token(final)
    os.rename(final, f"{final}.old-{token}")
    killed = f"{final}.partial-99-0123abcd"
    os.makedirs(killed)
    open(os.path.join(killed, output_folder.MARKER), "w").write("anomaly_core output folder 99-0123abcd\n")
    with output_folder.replacing(final, "--output") as staging:
        assert open(os.path.join(final, "a.txt")).read() == "first"  # restored before staging
        assert not os.path.exists(killed)
        open(os.path.join(staging, "a.txt"), "w").write("second")
    assert open(os.path.join(final, "a.txt")).read() == "second"
    assert sorted(os.listdir(tmp_path)) == [".eval.lock", "eval"]
    # An error inside the block: the staging folder goes, the previous folder stays.
    with pytest.raises(RuntimeError):
        with output_folder.replacing(final, "--output"):
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == [".eval.lock", "eval"]
    assert open(os.path.join(final, "a.txt")).read() == "second"


def test_a_run_killed_before_its_staging_folder_was_named_leaves_nothing_behind(tmp_path):
    """Killed between making `<final>.partial-<token>.init` and renaming it: the folder holds
    nothing, or a marker cut short; the next run removes it. One holding anything else stays."""
    final = str(tmp_path / "eval")
    empty = f"{final}.partial-98-0123abcd.init"
    cut = f"{final}.partial-99-0123abcd.init"
    users = f"{final}.partial-97-0123abcd.init"
    for folder in (empty, cut, users):
        os.makedirs(folder)
    open(os.path.join(cut, output_folder.MARKER), "w").write("anomaly_core out")
    open(os.path.join(users, output_folder.MARKER), "w").write("anomaly_core output folder 97-0123abcd\n")
    open(os.path.join(users, "mask.png"), "w").write("the user's")
    with output_folder.replacing(final, "--output") as staging:
        assert os.path.basename(staging).startswith("eval.partial-") and not staging.endswith(".init")
        open(os.path.join(staging, "a.txt"), "w").write("new")
    assert sorted(os.listdir(tmp_path)) == [".eval.lock", "eval", os.path.basename(users)]
    assert open(os.path.join(users, "mask.png")).read() == "the user's"


def test_workdirs_own_unmarked_folder_is_kept_aside_not_deleted(tmp_path):
    """An eval/ written before the marker existed: kept whole beside the new one."""
    final = str(tmp_path / "eval")
    os.makedirs(final)
    open(os.path.join(final, "metrics.json"), "w").write("{}")
    with pytest.raises(RuntimeError):  # a failed evaluation leaves it where it is
        with output_folder.replacing(final, "<workdir>/eval", keep_unmarked=True):
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == [".eval.lock", "eval"]
    with output_folder.replacing(final, "<workdir>/eval", keep_unmarked=True) as staging:
        open(os.path.join(staging, "metrics.json"), "w").write('{"new": 1}')
    kept = [n for n in os.listdir(tmp_path) if n.startswith("eval.unmarked-")]
    assert len(kept) == 1 and open(os.path.join(tmp_path, kept[0], "metrics.json")).read() == "{}"


def test_two_predictions_into_one_output_at_once(images, tmp_path):
    """Issue 29, item 3: the second is refused by the output folder's lock; the first completes."""
    out = str(tmp_path / "out")
    code = ("import sys; sys.path.insert(0, {root!r})\n"
            "from tests.test_output_folder import predict\n"
            "predict({images!r}, {out!r}, {workdir!r}, delay=1.0)\n")
    first = subprocess.Popen([sys.executable, "-c", code.format(root=ROOT, images=images, out=out,
                                                                 workdir=str(tmp_path / "a"))],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(n.startswith("out.partial-") for n in os.listdir(tmp_path)):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
            time.sleep(0.05)
        with pytest.raises(CheckpointError, match=rf"--output={out} is in use by another run \(process "
                                                  rf"{first.pid}, lock {tmp_path}/.out.lock\)"):
            predict(images, out, str(tmp_path / "b"))
    finally:
        text = first.communicate(timeout=120)[0]
    assert first.returncode == 0, text[-3000:]
    with open(os.path.join(out, "predictions.csv"), newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert sorted(os.listdir(tmp_path)) == [".out.lock", "images", "out"]
