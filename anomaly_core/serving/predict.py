"""`--mode=predict`: a folder of images scored with a trained run, written to
`<workdir>/predict/` (or `--output`)."""
from __future__ import annotations

import jax

from anomaly_core.evaluation import evaluation
from anomaly_core.program.method import Method
from anomaly_core.serving import api


def predict(method: Method, config, workdir: str, input_dir: str, output: str | None = None) -> str:
    """Scores the images in `input_dir` with the run's selected checkpoint (through the same
    `api.Detector` a Python user loads); writes `<workdir>/predict/`. Returns the folder."""
    detector = api.Detector(workdir, config=config)
    if detector.method.name != method.name:
        raise ValueError(f"config.method={method.name!r} but the run in {workdir} is {detector.method.name!r}")
    with jax.set_mesh(detector.mesh):
        return evaluation.predict(detector.score_fn, detector.config, workdir, input_dir, detector.mesh, output)
