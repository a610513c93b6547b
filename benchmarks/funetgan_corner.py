"""The f-UNetGAN generator's border artefact on a trained run, measured (no training).

  python launch.py --config=configs/quickstart.py --workdir=runs/quickstart      # train once
  python -m benchmarks.funetgan_corner --workdir=runs/quickstart

Short quickstart runs draw a few saturated pixels at one place on the border of every
sample (a corner or an edge; where changes with the seed). This reports, on the run's selected checkpoint and the
demo's normal test crops:
  - the pixels where |G(E(x))| > 0.99 (tanh saturated: its derivative is below 0.02 there,
    so G barely moves them back) in at least 90% of the reconstructions;
  - the pixel of each normal crop where the residual |x - G(E(x))| peaks (its mode);
  - the critic's input-gradient magnitude per block of the image (BLOCKS x BLOCKS blocks;
    both heads' outputs summed, relative to its image mean), against the same for the untrained critic
    of the same seed: a critic that learned to watch the artefact is most sensitive there.
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_core import data as data_lib
from anomaly_core.program import program
from benchmarks.common import command_line, split_arrays, trained_run, write_results
from funetgan_jax import networks as fnets
from funetgan_jax import train_state as fstate

BLOCKS = 4  # the image is split into BLOCKS x BLOCKS regions for the critic's sensitivity
SATURATED = 0.99  # |tanh| above this: derivative 1 - 0.99^2 < 0.02


def block_sensitivity(critic, variables, x: jax.Array) -> np.ndarray:
    """|d (sum of both heads' logits) / dx| summed over channels, averaged over images and
    over each of the BLOCKS x BLOCKS regions, relative to its image mean: (BLOCKS, BLOCKS)."""
    def total(inp):
        out = critic.apply(variables, inp, train=False)
        return jnp.sum(out.global_logit) + jnp.sum(out.pixel_logits)

    g = np.abs(np.asarray(jax.grad(total)(x))).sum(-1).mean(0)
    h, w = g.shape
    blocks = g[: h // BLOCKS * BLOCKS, : w // BLOCKS * BLOCKS].reshape(BLOCKS, h // BLOCKS, BLOCKS, w // BLOCKS)
    return blocks.mean((1, 3)) / g.mean()


def main() -> None:
    args, detector, config, state = trained_run(__doc__, "funetgan_corner")
    G, D, E = fnets.networks(config)
    splits = data_lib.Splits(config.data)
    x, _, labels = split_arrays(config.data, splits["test"])
    x = jnp.asarray(x[labels == 0])
    xr = np.asarray(G.apply(fnets.generator_variables(state), E.apply(state["e"], x, train=False), train=False))

    saturated = (np.abs(xr) > SATURATED).any(-1).mean(0)  # fraction of crops with a channel saturated
    stuck = [(int(r), int(c), round(float(saturated[r, c]), 2)) for r, c in zip(*np.nonzero(saturated >= 0.9))]
    residual = np.abs(np.asarray(x) - xr).mean(-1)
    peaks = collections.Counter(np.unravel_index(int(m.argmax()), m.shape) for m in residual)
    (peak, count), = peaks.most_common(1)
    trained = block_sensitivity(D, state["d"], x)
    fresh = fstate.init_state(config, program.init_key(config.seed))["d"]
    untrained = block_sensitivity(D, fresh, x)

    rows = [{"block": f"rows {i * x.shape[1] // BLOCKS}-{(i + 1) * x.shape[1] // BLOCKS - 1}, "
                      f"cols {j * x.shape[2] // BLOCKS}-{(j + 1) * x.shape[2] // BLOCKS - 1}",
             "trained": round(float(trained[i, j]), 2), "untrained": round(float(untrained[i, j]), 2)}
            for i in range(BLOCKS) for j in range(BLOCKS)]
    for r in rows:
        print(r, flush=True)
    h = x.shape[1]
    notes = [f"saturated pixels (row, column, fraction of the {len(x)} normal reconstructions): {stuck or 'none'}",
             f"residual peak of the normal crops: pixel {tuple(int(v) for v in peak)} in {count} of {len(x)}",
             f"critic sensitivity, trained: max {trained.max():.2f} at block "
             f"{tuple(int(v) for v in np.unravel_index(trained.argmax(), trained.shape))}, "
             f"min {trained.min():.2f}; untrained: {untrained.min():.2f}-{untrained.max():.2f} "
             f"(blocks of {h // BLOCKS} pixels, (row, column) from the top left)"]
    for n in notes:
        print(n)
    meta = {"run": os.path.abspath(args.workdir), "checkpoint": f"step {detector.step} ({detector.checkpoint})",
            "seed": int(config.seed), "normal test crops": len(x)}
    print(write_results(args.out, title="f-UNetGAN: the generator's border artefact and the critic's attention",
                        command=command_line(), meta=meta, rows=rows,
                        columns=(("block", "image block"), ("trained", "critic input gradient, trained (x mean)"),
                                 ("untrained", "untrained critic (x mean)")), notes=notes))


if __name__ == "__main__":
    main()
