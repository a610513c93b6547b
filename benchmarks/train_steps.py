"""Training-step time, JAX vs the PyTorch mirror, same machine, one run, same architecture,
batch and precision: f-UNetGAN D step (both gradient penalties + Mixup), G step, E step,
GON step (with its inner gradient), CAE step; optionally the fused adversarial step.

  python -m benchmarks.train_steps --size reduced            # CPU: width 8, 32 px, batch 8
  python -m benchmarks.train_steps --size full --steps 20    # GPU: the paper-sized networks
  python -m benchmarks.train_steps --size full --precision bfloat16

Each JAX step is the function the training loop jits (funetgan_jax.updates.discriminator_update,
generator_update, encoder_step; gon_jax.train.train_step), jitted with its state donated.
Each PyTorch step is the same computation written as eager PyTorch on the mirror networks
(funetgan_jax/torch_reference.py, gon_jax/torch_reference.py): forwards in training mode,
autograd.grad(create_graph=True) for the penalties and the GON latent, Adam. Random inputs:
data loading is benchmarked apart (benchmarks/input_pipeline.py).
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

NAME = "train_steps"
# The f-UNetGAN steps' names (as --only matches them; the fused one is followed by its counts).
FUNETGAN_STEPS = ("f-UNetGAN D step (2 GPs + Mixup)", "f-UNetGAN G step", "f-UNetGAN E step",
                  "f-UNetGAN adversarial step, fused")


# ----------------------------------------------------------------------------- configs
def funetgan_config(size: str, batch: int, precision: str):
    from configs.funetgan_base import base_config

    config = base_config()
    if size == "reduced":
        config.data.image_size = config.model.image_size = 32
        config.model.width = 8
        config.model.z_dim = 32
    config.train.batch_size = batch
    config.model.dtype = precision
    return config


def gon_config(kind: str, size: str, batch: int, precision: str):
    from configs.gon_base import base_config

    config = base_config(kind, "mvtec")  # 64x64x3 (conv GON: ngf 124; CAE: widths 32, 64)
    if size == "reduced":
        if kind == "conv_gon":
            config.model.ngf = 16
        else:
            config.model.widths = (8, 16)
    config.train.batch_size = batch
    config.model.dtype = precision
    return config


# ----------------------------------------------------------------------------- JAX steps
def _funetgan_jax_specs(size, batch, precision, fused, rng, key) -> list[tuple]:
    """(name, step fn, args, images per step) of the f-UNetGAN steps."""
    from funetgan_jax import updates as fupdates

    config = funetgan_config(size, batch, precision)
    s, c = config.model.image_size, config.model.channels
    state = common.initial_state(config)
    x = jnp.asarray(rng.uniform(size=(batch, s, s, c)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(batch, config.model.z_dim)), jnp.float32)

    def d_step(carry, x, key):
        g, d, opt_d = carry
        g, d, opt_d, metrics, _ = fupdates.discriminator_update(config, g, d, opt_d, x, key)
        return (g, d, opt_d), metrics

    def g_step(carry, z):
        g, d, opt_g = carry
        g, d, opt_g, metrics = fupdates.generator_update(config, g, d, opt_g, z)
        return (g, d, opt_g), metrics

    def e_step(state, x, key):
        return fupdates.encoder_step(config, state, {"image": x}, key)

    copy = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731 - every step donates its own copy
    d_name, g_name, e_name, fused_name = FUNETGAN_STEPS
    specs = [
        (d_name, d_step, (copy((state["g"], state["d"], state["opt_d"])), x, key), batch),
        (g_name, g_step, (copy((state["g"], state["d"], state["opt_g"])), z), batch),
        (e_name, e_step, (copy(state), x, key), batch),
    ]
    if fused:
        n = config.train.n_critic
        xs = jnp.broadcast_to(x, (n, *x.shape))
        specs.append((f"{fused_name} ({n} D + 1 G)",
                      lambda st, b, k: fupdates.adversarial_step(config, st, b, k), (copy(state), {"image": xs}, key),
                      n * batch))
    return specs


def jax_steps(size: str, batch: int, precision: str, fused: bool, only: str = "") -> dict[str, dict[str, Any]]:
    """name -> {'call': blocking zero-arg call, 'compiled': common.Compiled, 'images': per step}."""
    from gon_jax import train as gt

    rng = np.random.default_rng(0)
    steps: dict[str, dict[str, Any]] = {}
    key = jax.random.key(1)
    specs = []
    if any(_selected(name, only) for name in FUNETGAN_STEPS):
        specs += _funetgan_jax_specs(size, batch, precision, fused, rng, key)
    for kind, label in (("conv_gon", "GON step (inner gradient)"), ("cae", "CAE step")):
        if not _selected(label, only):
            continue
        gcfg = gon_config(kind, size, batch, precision)
        gs = gcfg.model.image_size
        gstate = common.initial_state(gcfg)
        lo, hi = gcfg.data.value_range
        gx = jnp.asarray(rng.uniform(lo, hi, size=(batch, gs, gs, gcfg.model.channels)), jnp.float32)
        specs.append((label, functools.partial(lambda st, b, k, gcfg: gt.train_step(gcfg, st, b, k), gcfg=gcfg),
                      (gstate, {"image": gx}, key), batch))

    for name, fn, args, images in specs:
        if not _selected(name, only):
            continue
        print(f"[jax] compiling {name} ...", file=sys.stderr, flush=True)
        compiled = common.compile_jax(fn, *args, donate_argnums=0)
        steps[name] = {"call": common.stateful(compiled, *args), "compiled": compiled, "images": images}
    return steps


# ----------------------------------------------------------------------------- PyTorch steps
def torch_steps(size: str, batch: int, precision: str, fused: bool, setup: dict[str, Any]) -> dict[str, Callable]:
    """name -> blocking zero-arg call of the same step in eager PyTorch on the mirror networks."""
    import torch

    from funetgan_jax import torch_reference as ftr
    from gon_jax import torch_reference as gtr

    dev, autocast = setup["device"], setup["autocast"]
    torch.manual_seed(0)
    config = funetgan_config(size, batch, precision)
    m, t = config.model, config.train
    G = ftr.build_network("generator", m).to(dev).train()
    D = ftr.build_network("discriminator", m).to(dev).train()
    E = ftr.build_network("encoder", m).to(dev).train()
    adam = lambda net, lr: torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(t.betas))  # noqa: E731
    opt_g, opt_d, opt_e = adam(G, t.lr_g), adam(D, t.lr_d), adam(E, t.lr_e)
    s, c = m.image_size, m.channels
    x = torch.rand(batch, c, s, s, device=dev)

    def sync(value=None):
        if dev == "cuda":
            torch.cuda.synchronize()
        return value

    def pixel_sum(dec):
        return dec.float().sum(dim=(1, 2, 3))

    def d_update(real):
        D.requires_grad_(True)
        with torch.no_grad(), autocast():
            fake = G(torch.randn(batch, m.z_dim, device=dev))
        fake = fake.float()
        opt_d.zero_grad(set_to_none=True)
        with autocast():
            enc_r, dec_r = D(real)
            enc_f, dec_f = D(fake)
            lam = torch.rand(batch, 1, 1, 1, device=dev)
            _, dec_m = D(lam * real + (1 - lam) * fake)
            a = torch.rand(batch, c, 1, 1, device=dev)  # per-channel interpolation (reference)
            x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
            enc_h, dec_h = D(x_hat)
        (g_enc,) = torch.autograd.grad(enc_h.float().sum(), x_hat, create_graph=True, retain_graph=True)
        (g_dec,) = torch.autograd.grad(dec_h.float().sum(), x_hat, create_graph=True)
        gp_enc = ((g_enc.flatten(1).norm(dim=1) - 1) ** 2).mean()
        gp_dec = ((g_dec.flatten(1).norm(dim=1) - 1) ** 2).mean()
        w_enc = enc_r.float().mean() - enc_f.float().mean()
        w_dec = pixel_sum(dec_r).mean() - pixel_sum(dec_f).mean()
        l_mix = ((dec_m.float() - (lam * dec_r.float() + (1 - lam) * dec_f.float())) ** 2).mean()
        loss = -w_enc + t.lambda_gp * gp_enc - w_dec + t.lambda_gp * gp_dec + t.lambda_mix * l_mix
        loss.backward()
        opt_d.step()
        return loss

    def g_update():
        D.requires_grad_(False)  # as in JAX, the G step computes no D gradients
        opt_g.zero_grad(set_to_none=True)
        with autocast():
            enc, dec = D(G(torch.randn(batch, m.z_dim, device=dev)))
        loss = -enc.float().mean() - pixel_sum(dec).mean()
        loss.backward()
        opt_g.step()
        return loss

    def e_update():
        G.eval().requires_grad_(False)
        D.eval().requires_grad_(False)
        opt_e.zero_grad(set_to_none=True)
        with autocast():
            xr = G(E(x))
            with torch.no_grad():
                _, _, fe_x, fd_x = D(x, return_features=True)
            _, _, fe_r, fd_r = D(xr, return_features=True)
        mse = lambda p, q: ((p.float() - q.float()) ** 2).mean()  # noqa: E731
        loss = mse(xr, x) + t.kappa * (mse(fe_r, fe_x) + mse(fd_r, fd_x))
        loss.backward()
        opt_e.step()
        G.train().requires_grad_(True)
        D.train().requires_grad_(True)
        return loss

    calls = {
        "f-UNetGAN D step (2 GPs + Mixup)": lambda: sync(d_update(x)),
        "f-UNetGAN G step": lambda: sync(g_update()),
        "f-UNetGAN E step": lambda: sync(e_update()),
    }
    if fused:
        n = t.n_critic

        def adversarial():
            for _ in range(n):
                d_update(x)
            return sync(g_update())

        calls[f"f-UNetGAN adversarial step, fused ({n} D + 1 G)"] = adversarial

    for kind, label in (("conv_gon", "GON step (inner gradient)"), ("cae", "CAE step")):
        gcfg = gon_config(kind, size, batch, precision)
        net = gtr.build_model(gcfg.model).to(dev).train()
        opt = torch.optim.Adam(net.parameters(), lr=gcfg.train.lr, betas=tuple(gcfg.train.betas))
        gs, lo, hi = gcfg.model.image_size, *gcfg.data.value_range
        gx = lo + (hi - lo) * torch.rand(batch, gcfg.model.channels, gs, gs, device=dev)

        def step(net=net, opt=opt, gx=gx, kind=kind, nz=gcfg.model.get("nz", 0)):
            opt.zero_grad(set_to_none=True)
            with autocast():
                if kind == "conv_gon":
                    _, loss = gtr.conv_gon_step(net, gx, nz)  # the mirror's own GON step
                else:
                    loss = ((net(gx).float() - gx) ** 2).mean()
            loss.backward()
            opt.step()
            return sync(loss)

        calls[label] = step
    return calls


# ----------------------------------------------------------------------------- main
def _add_arguments(p) -> None:
    p.add_argument("--fused", action="store_true",
                   help="also time the fused adversarial step (n_critic D + 1 G in one call; compiles the D step "
                        "n_critic times on CPU, where the loop is unrolled)")
    p.add_argument("--only", default="",
                   help="comma-separated substrings: time only the steps whose name contains one (e.g. 'GON,CAE')")


def _selected(name: str, only: str) -> bool:
    return not only or any(part.strip().lower() in name.lower() for part in only.split(",") if part.strip())


def main(argv: list[str] | None = None) -> str:
    args = common.parse_args(
        __doc__.splitlines()[0], NAME, argv, default_steps=10,
        add_arguments=_add_arguments)
    fused = args.fused
    batch = args.batch or (8 if args.size == "reduced" else 16)
    setup = common.setup_torch(args.precision)
    peak = common.measure_peak_flops(dtype=jnp.bfloat16 if args.precision == "bfloat16" else jnp.float32)
    jsteps = jax_steps(args.size, batch, args.precision, fused, args.only)
    tsteps = torch_steps(args.size, batch, args.precision, fused, setup)

    rows = []
    for name, js in jsteps.items():
        print(f"[time] {name} ...", file=sys.stderr, flush=True)
        common.torch_peak_memory(reset=True)
        timing = common.interleaved({"jax": js["call"], "torch": tsteps[name]}, steps=args.steps,
                                    warmup=args.warmup)
        torch_mem = common.torch_peak_memory()
        flops = common.flops_of(js["compiled"])
        jt, tt = timing["jax"], timing["torch"]
        for fw, tm in (("JAX", jt), ("PyTorch", tt)):
            rows.append({
                "step": name, "framework": fw,
                "compile_s": round(js["compiled"].lower_s + js["compiled"].compile_s, 1) if fw == "JAX" else None,
                "median_ms": tm.median * 1e3, "min_ms": tm.min * 1e3,
                "images_per_s": js["images"] / tm.median,
                "gflop_per_step": flops / 1e9 if flops else None,
                "pct_of_peak": 100 * flops / tm.median / peak if flops else None,
                "step_memory_mb": (common.static_memory_bytes(js["compiled"]) or 0) / 2**20 if fw == "JAX"
                else (torch_mem / 2**20 if torch_mem else None),
                "jax_speedup": tt.median / jt.median if fw == "JAX" else None,
            })
    peak_mem, peak_kind = common.device_peak_memory()
    meta = {**common.machine_info(setup["threads"]), "size": args.size, "batch": batch,
            "precision": args.precision, "steps_timed": args.steps, "warmup": args.warmup,
            "peak_matmul_gflops": round(peak / 1e9, 1), "peak_memory_mb": round(peak_mem / 2**20),
            "peak_memory_kind": peak_kind}
    columns = [("step", "step"), ("framework", "framework"), ("compile_s", "compile s"),
               ("median_ms", "median ms"), ("min_ms", "min ms"), ("images_per_s", "images/s"),
               ("jax_speedup", "JAX speed-up"), ("gflop_per_step", "GFLOP/step (XLA)"),
               ("pct_of_peak", "% of matmul peak"), ("step_memory_mb", "step memory MB")]
    notes = [
        f"PyTorch threads: {setup['threads']}; JAX's XLA:CPU pool uses one thread per usable core "
        f"({common.jax_cpu_threads()}): both frameworks get the same cores." if setup["device"] == "cpu"
        else "Both frameworks on the same GPU.",
        "compile s: JAX trace + XLA compile, once per step function, excluded from the step times.",
        "JAX speed-up: PyTorch median / JAX median (> 1: JAX faster).",
        "GFLOP/step from XLA's cost analysis of the JAX program; the PyTorch row divides the same "
        f"count by its own time. Matmul peak ({args.precision}, best of 10 on this device): {peak / 1e9:.1f} GFLOP/s.",
        "step memory: XLA's memory analysis of the JAX step (arguments + outputs + scratch - donated); "
        "PyTorch: peak CUDA bytes allocated during its timed steps (GPU only). "
        f"Process-wide peak: {peak_mem / 2**20:.0f} MB ({peak_kind}).",
        f"Load average (1 min) at the start: {meta['load_average_1m']:.2f}; JAX and PyTorch timed alternately "
        "in blocks of up to 5 calls, each block after one untimed call.",
    ]
    md = common.write_results(args.out, title=f"Training steps, {args.size} size, batch {batch}, {args.precision}",
                              command=common.command_line(), meta=meta, rows=rows, columns=columns, notes=notes)
    print(md)
    return md


if __name__ == "__main__":
    main()
