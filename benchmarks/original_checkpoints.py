"""Which state_dicts of the ORIGINAL PyTorch f-UNetGAN load into this port, and how closely
the loaded networks reproduce the original's outputs.

  git clone https://github.com/nnajeh/f-UNetGAN /tmp/f-UNetGAN   # on a machine with network
  python -m benchmarks.original_checkpoints --original=/tmp/f-UNetGAN

Nothing of the original is copied into this repository: the script reads the clone's files,
applies in memory the smallest edits without which they do not import or run (each edit is
listed in EDITS with the reason, and reported), builds the original's own classes at full
size (128x128, base width 64), saves their state_dicts as the original's main.py does
(`torch.save(G.module.state_dict())`, i.e. without and, for the DataParallel variant, with
the 'module.' prefix), converts them with anomaly_core.interop.convert_checkpoint, and compares
PyTorch and JAX outputs: two training forwards (spectral-norm state written back) then one
eval forward, as docs/PARITY.md describes, in float32 and, to tell rounding from different
arithmetic, in float64 (the same files cast; JAX with x64). It also reports what the classes do as committed
(unedited), so that the table says which files cannot exist at all.

Config: configs/mvtec_bottle.py:reference (the original's d_norm, output and pixel sums).
Writes benchmarks/results/original_checkpoints.{json,md}; exits 1 unless every file loads
and float64 agrees within 1e-10 (float32 within 1e-4) of the output scale. Needs the torch
extra. About 10 minutes on 2 CPU cores (XLA compiles the full-size networks twice).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)  # the float64 comparison; float32 stays explicit below

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# (file, text in the original, replacement, why). Applied in memory, in this order.
EDITS = (
    ("networks/unetgan.py", "\n         self.residual_conv_3", "\n        self.residual_conv_3",
     "one extra space of indentation: the file is an IndentationError as committed"),
    ("networks/unetgan.py", "GResidualBlock( 8 * base_channels, 4 * base_channels),\n                    "
     "CBAMBlock(1* base_channels),", "GResidualBlock( 8 * base_channels, 4 * base_channels),\n"
     "                    CBAMBlock(4* base_channels),",
     "the third CBAM is built for 64 channels after a 256-channel block: the forward fails"),
    ("networks/encoder.py", ", attention=attention)", ")",
     "E_ResidualConv takes no attention argument: Encoder() raises TypeError"),
)
# Names the original's files use but never define or import from a committed file.
GLOBALS = ("CBAMBlock = CBAM (utils/attention.py defines CBAM; the networks call CBAMBlock); "
           "channel = 3 (from the uncommitted utils/parameters.py, used by UNet's view)")
FILES = ("utils/spectral_normalization.py", "utils/attention.py", "networks/residual-blocks.py",
         "networks/unetgan.py", "networks/encoder.py")


# Imported at the top of the original's files but used by none of the network classes.
UNUSED_IMPORTS = ("torchvision", "matplotlib")


class _Unused(types.ModuleType):
    """Stands in for a package the network files import but never use (not installed here)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unused(f"{self.__name__}.{name}")


def _stub_unused_imports() -> list[str]:
    stubbed = []
    for top in UNUSED_IMPORTS:
        if importlib.util.find_spec(top) is None:
            for name in (top, f"{top}.transforms", f"{top}.utils", f"{top}.datasets", f"{top}.pyplot"):
                sys.modules.setdefault(name, _Unused(name))
            stubbed.append(top)
    return stubbed


def load_original(root: str, edits: tuple = EDITS) -> dict[str, Any]:
    """The original's classes in one namespace (its `from utils.* import *` lines dropped and
    replaced by the names they provide)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "np": np, "channel": 3}
    for path in FILES:
        with open(os.path.join(root, path)) as f:
            text = f.read()
        for file, old, new, _ in edits:
            if file == path:
                if old not in text:
                    raise SystemExit(f"{path}: the text to edit ({old.strip()[:40]!r}...) is not in this "
                                     "clone; the script knows the original at commit e2dcb0f")
                text = text.replace(old, new)
        text = "\n".join(line for line in text.splitlines() if not line.startswith("from utils."))
        exec(compile(text, os.path.join(root, path), "exec"), namespace)  # noqa: S102 - the user's own clone
        if path == "utils/attention.py":
            namespace["CBAMBlock"] = namespace["CBAM"]
    return namespace


def as_committed(root: str) -> dict[str, str]:
    """What the files do without the edits: imported, and each class built and run once (with
    only the indentation fixed when the import fails), or the error."""
    import torch

    out = {}
    try:
        ns = load_original(root, edits=())
    except Exception as e:  # noqa: BLE001 - reported
        out["import"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        ns = load_original(root, edits=EDITS[:1])
        out["import with the indentation fixed"] = "imports"
    cases = {"Generator()": lambda: ns["Generator"]()(torch.randn(1, 100)),
             "UNet(attention=True)": lambda: ns["UNet"](attention=True)(torch.rand(1, 3, 128, 128)),
             "UNet(attention=False)": lambda: ns["UNet"](attention=False),
             "Encoder()": lambda: ns["Encoder"]()}
    for name, fn in cases.items():
        try:
            fn()
            out[name] = "runs"
        except Exception as e:  # noqa: BLE001 - reported
            out[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return out


def nhwc(t: Any) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).numpy()


def compare(name: str, build: Any, network: str, config: Any, inputs: list, prefix: bool) -> dict[str, Any]:
    """Save a freshly built original network's state_dict, convert it with the converter,
    then compare train x2 and eval forwards in float32 and in float64."""
    import torch

    from anomaly_core.interop import convert_checkpoint as cc

    torch_module = build()
    torch_module.train()
    with torch.no_grad():
        torch_module(inputs[0])  # one training forward: u moves off its random start, as in any saved model
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, f"{network}.pth")
        sd = torch.nn.DataParallel(torch_module).state_dict() if prefix else torch_module.state_dict()
        torch.save(sd, pth)
        used, variables = cc._import_variables(config, network, pth, None)
    result = {"case": name, "network": network, "spectral_norm": used.model.spectral_norm,
              "keys": len(sd), "module_prefix": prefix, "torch_parameters": sum(p.numel() for p in torch_module.parameters())}
    for label, t_dtype, j_dtype in (("float32", torch.float32, jnp.float32), ("float64", torch.float64, jnp.float64)):
        copy = build().to(t_dtype)
        copy.load_state_dict(torch_module.state_dict())
        cast = jax.tree.map(lambda a: jnp.asarray(a, j_dtype), variables)  # noqa: B023 - used at once
        train_err, eval_err = _forwards(copy, used, network, cast, [x.to(t_dtype) for x in inputs])
        result[f"{label}_train_max_rel"], result[f"{label}_eval_max_rel"] = train_err, eval_err
    return result


def _forwards(torch_module: Any, config: Any, network: str, variables: Any, inputs: list) -> tuple[float, float]:
    """Max |jax - torch| / max(1, max |torch|) over two training forwards, then over one eval forward."""
    import torch

    from anomaly_core.interop import convert_checkpoint as cc

    module, _ = cc.flax_module(config, network)
    kwargs = {"return_features": False} if network == "discriminator" else {}
    train_fn = jax.jit(functools.partial(module.apply, train=True, mutable=["spectral", "batch_stats"], **kwargs))
    eval_fn = jax.jit(functools.partial(module.apply, train=False, **kwargs))

    def outputs(jax_out, torch_out):
        if network == "discriminator":
            return [(jax_out.global_logit, torch_out[0]), (jax_out.pixel_logits, torch_out[1])]
        return [(jax_out, torch_out)]

    def worst(pairs):
        scale = max(1.0, max(float(t.detach().abs().max()) for _, t in pairs))
        return max(float(np.max(np.abs(np.asarray(j) - nhwc(t)))) for j, t in pairs) / scale

    torch_module.train()
    train_err = 0.0
    for x in inputs:
        jx = jnp.asarray(nhwc(x))
        out, updates = train_fn(variables, jx)
        variables = {**variables, **updates}
        with torch.no_grad():
            t_out = torch_module(x)
        train_err = max(train_err, worst(outputs(out, t_out)))
    torch_module.eval()
    with torch.no_grad():
        t_out = torch_module(inputs[0])
    return train_err, worst(outputs(eval_fn(variables, jnp.asarray(nhwc(inputs[0]))), t_out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", required=True, help="a clone of github.com/nnajeh/f-UNetGAN")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "original_checkpoints"))
    args = p.parse_args(argv)
    import torch

    from configs.mvtec_bottle import get_config

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    commit = subprocess.run(["git", "-C", args.original, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    stubbed = _stub_unused_imports()
    report: dict[str, Any] = {"original_commit": commit, "unused_imports_stubbed": stubbed,
                              "as_committed": as_committed(args.original),
                              "edits": [{"file": f, "why": why} for f, _, _, why in EDITS], "globals": GLOBALS,
                              "config": "configs/mvtec_bottle.py:reference", "results": []}
    ns = load_original(args.original)
    base = get_config("reference")
    images = [torch.rand(2, 3, 128, 128) for _ in range(2)]
    latents = [torch.randn(2, 100) for _ in range(2)]
    cases = [
        ("Generator() (third CBAM at its block's width)", lambda: ns["Generator"](), "generator", {}, latents,
         False),
        ("UNet(attention=True) (the original's default D)", lambda: ns["UNet"](attention=True), "discriminator",
         {"d_attention": "cbam"}, images, False),
        ("UNet(attention=True), saved through DataParallel", lambda: ns["UNet"](attention=True), "discriminator",
         {"d_attention": "cbam"}, images, True),
        ("UNet(attention=None) (no attention)", lambda: ns["UNet"](attention=None), "discriminator",
         {"d_attention": "none"}, images, False),
        ("Encoder() (blocks without the attention argument)", lambda: ns["Encoder"](), "encoder", {}, images, False),
    ]
    for name, build, network, overrides, inputs, prefix in cases:
        config = base.copy_and_resolve_references()
        with config.unlocked():
            config.model.update(overrides)
        try:
            row = compare(name, build, network, config, inputs, prefix)
        except Exception as e:  # noqa: BLE001 - reported
            row = {"case": name, "network": network, "error": f"{type(e).__name__}: {e}",
                   "trace": traceback.format_exc()[-2000:]}
        report["results"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}))
    report["seconds"] = round(time.time() - started, 1)
    report["machine"] = f"{os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=2)
    lines = [f"# Original f-UNetGAN state_dicts in this port (original commit {commit})", "",
             f"`python -m benchmarks.original_checkpoints --original=<clone>`; {report['machine']}; "
             f"{report['seconds']} s. Config {report['config']}.", "",
             "As committed (no edits):", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["as_committed"].items()]
    lines += ["", "Edits applied in memory before building the classes:", ""]
    lines += [f"- {e['file']}: {e['why']}" for e in report["edits"]] + [f"- names: {GLOBALS}"]
    if stubbed:
        lines.append(f"- not installed here and used by no network class, so stubbed: {', '.join(stubbed)}")
    lines.append("")
    lines += ["Max |JAX - PyTorch| / max(1, max |PyTorch output|), over two training forwards and over one "
              "eval forward, batch 2:", "",
              "| original class | network | keys | spectral norm read | torch params | float32 train | float32 eval "
              "| float64 train | float64 eval |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['network']} | | | | {r['error'][:80]} | | | |")
        else:
            lines.append(f"| {r['case']} | {r['network']} | {r['keys']} | {r['spectral_norm']} | "
                         f"{r['torch_parameters']:,} | " + " | ".join(
                             f"{r[f'{d}_{m}_max_rel']:.1e}" for d in ("float32", "float64") for m in ("train", "eval"))
                         + " |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    # Same arithmetic: float64 agrees to rounding; float32 differs by rounding only.
    ok = all("error" not in r and max(r["float64_train_max_rel"], r["float64_eval_max_rel"]) <= 1e-10
             and max(r["float32_train_max_rel"], r["float32_eval_max_rel"]) <= 1e-4 for r in report["results"])
    print(f"wrote {args.out}.json and .md; float64 within 1e-10 and float32 within 1e-4 of the output scale: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
