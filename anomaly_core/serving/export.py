"""`--mode=export`: a trained run's scoring function as a serialized StableHLO program.

Writes `<out>/` (default `<workdir>/export/`):
- `model.jax_export`: `jax.export` serialization of images (B, S, S, C) float32 ->
  (image scores (B,), anomaly maps (B, S, S)), the parameters embedded, the batch size B
  symbolic (any B), lowered for CPU and, where the lowering succeeds, CUDA and TPU.
  Load it in any process with only JAX installed:
      exported = jax.export.deserialize(open("model.jax_export", "rb").read())
      scores, maps = exported.call(images)
- `export.json`: what a serving user needs: the input (shape, layout, channel order, value
  range, how the evaluation resized and converted images), the outputs, the fitted image and
  pixel thresholds and the normalised score, the checkpoint, the platforms, and how to load.

ONNX is not written: jax2onnx, the converter for JAX programs, pins orbax-checkpoint below the
version this project needs, so it cannot be installed beside it (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp

from anomaly_core.evaluation import output_folder
from anomaly_core.evaluation.report import write_atomically
from anomaly_core.serving import api

log = logging.getLogger(__name__)

ARTEFACT = "model.jax_export"
METADATA = "export.json"
PLATFORMS = ("cpu", "cuda", "tpu")


def _exported(detector: api.Detector, platforms: tuple[str, ...]) -> jax.export.Exported:
    cfg = detector.config
    size, channels = int(cfg.data.image_size), int(cfg.data.channels)
    score, state = detector.method.scoring.score(cfg), detector.state

    def scores_and_maps(images):
        out = score(state, {"image": images})
        return out["image_score"].astype(jnp.float32), out["anomaly_map"].astype(jnp.float32)

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32)
    return jax.export.export(jax.jit(scores_and_maps), platforms=platforms)(spec)


def export_run(workdir: str, config, out: str | None = None) -> str:
    """Exports the run in `workdir` (its config.json; config.eval.checkpoint selects the
    checkpoint) to `out` (default `<workdir>/export`); returns the folder."""
    detector = api.Detector(workdir, config=config)
    final = os.path.abspath(out or os.path.join(workdir, "export"))
    with output_folder.replacing(final, "export folder", keep_unmarked=out is None) as out:  # swapped in whole
        platforms: tuple[str, ...] = PLATFORMS
        try:
            exported = _exported(detector, platforms)
        except Exception as e:  # noqa: BLE001 - a platform this program cannot be lowered for
            log.warning("lowering for %s failed (%s: %s); exporting for this machine's platform only",
                        "/".join(platforms), type(e).__name__, str(e).splitlines()[0][:200])
            platforms = (jax.default_backend(),)
            exported = _exported(detector, platforms)
        write_atomically(os.path.join(out, ARTEFACT), bytes(exported.serialize()))
        cfg = detector.config
        lo, hi = (float(v) for v in cfg.data.value_range)
        size, channels = int(cfg.data.image_size), int(cfg.data.channels)
        meta: dict[str, Any] = {
            "method": detector.method.name,
            "run": os.path.abspath(workdir),
            "checkpoint_step": int(detector.step),
            "checkpoint": detector.checkpoint,
            "files": {"stablehlo": ARTEFACT},
            "platforms": list(platforms),
            "input": {
                "shape": ["batch", size, size, channels],
                "layout": "NHWC (batch, height, width, channels)",
                "dtype": "float32",
                "channels": "RGB" if channels == 3 else "gray (ITU-R 601-2 luminance of RGB: 0.299 R + 0.587 G + 0.114 B)",
                "value_range": [lo, hi],
                "from_uint8": f"x / 255 * {hi - lo:g} + {lo:g}",
                "resize": f"bilinear with antialiasing (PIL) to {size}x{size}, the whole image (the aspect ratio is "
                          "not kept), as the evaluation did",
            },
            "outputs": {
                "image_score": "(batch,) float32, higher = more anomalous",
                "anomaly_map": f"(batch, {size}, {size}) float32 per-pixel anomaly",
            },
            "threshold": detector.threshold,
            "pixel_threshold": detector.pixel_threshold,
            "normalised_score": "image_score / threshold (above 1: anomalous); thresholds were fitted on "
                                "validation data by the run's evaluation (null: not evaluated yet)",
            "load": "import jax; exported = jax.export.deserialize(open('model.jax_export', 'rb').read()); "
                    "scores, maps = exported.call(images)",
            "onnx": "not written: jax2onnx cannot be installed beside this project's orbax-checkpoint",
        }
        write_atomically(os.path.join(out, METADATA), (json.dumps(meta, indent=2) + "\n").encode())
    log.info("exported checkpoint step %d (%s) for %s to %s", detector.step, detector.checkpoint,
             "/".join(platforms), final)
    return final
