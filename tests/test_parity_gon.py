"""Numerical parity of the GON networks, the GON step and the CAE with the PyTorch mirror.

The PyTorch side is gon_jax/torch_reference.py (the notebooks' and cwkx/GON's code);
weights go PyTorch -> Flax through anomaly_core.interop.torch_import with gon_jax/torch_names.py's
name maps, models are built from config.model on both sides. Tolerances:
tests/parity_helpers.py (forward outputs within 1e-5 of the output scale; gradients as
accurate as PyTorch's own float32 ones, measured against float64). The conv GON step is also
compared exactly in float64.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.interop.torch_import import torch_to_flax
from gon_jax import build, origin
from gon_jax.layers import ConvDecoder
from gon_jax.variants import variant

torch = pytest.importorskip("torch")
ref = pytest.importorskip("gon_jax.torch_reference")
from parity_helpers import (FORWARD_RTOL, GRAD_RATIO, assert_grads_as_accurate, assert_tree_close,  # noqa: E402
                            float64_template, forward_diffs, jit, nhwc, torch_copy, torch_grads_as_flax)

pytestmark = pytest.mark.parity


def tiny(kind, preset, **overrides):
    cfg = build.default_gon_model_config(kind, preset)
    cfg.update(overrides)
    return cfg


def networks(cfg):
    """(Flax module, its variable shapes, PyTorch mirror) of config.model."""
    template = jax.eval_shape(lambda: build.init_variables(cfg, jax.random.key(0)))
    return build.build_gon_model(cfg), template, ref.build_model(cfg)


@pytest.mark.parametrize("preset,nz,ngf,batch", [("mvtec", 8, 4, 4), ("mnist", 8, 4, 4),
                                                 ("mvtec", 100, 16, 4)], ids=["mvtec", "mnist", "mvtec-moderate"])
def test_conv_gon_forward_parity(preset, nz, ngf, batch):
    """Two training forwards (batch statistics; running statistics compared after each), then
    eval. 'mvtec-moderate' is the 64x64 MVTec layout with its real nz = 100 at ngf 16."""
    torch.manual_seed(0)
    cfg = tiny("conv_gon", preset, nz=nz, ngf=ngf)
    module, template, tm = networks(cfg)
    tm.train()
    variables = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)
    train_apply = jit(functools.partial(module.apply, train=True, mutable=("batch_stats",)))
    zs = [torch.randn(batch, nz) for _ in range(2)]
    for step, z in enumerate(zs):
        out, updates = train_apply(variables, jnp.asarray(z.numpy()))
        variables = {**variables, **updates}
        with torch.no_grad():
            forward_diffs([(out, tm(z), "image")], f"train forward {step + 1}")
        expected = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)
        assert_tree_close(variables["batch_stats"], expected["batch_stats"],
                          f"running statistics after {step + 1} forwards")
    tm.eval()
    out = jit(functools.partial(module.apply, train=False))(variables, jnp.asarray(zs[0].numpy()))
    with torch.no_grad():
        forward_diffs([(out, tm(zs[0]), "image")], "eval")
    assert out.shape == (batch, cfg.image_size, cfg.image_size, cfg.channels)


def test_implicit_gon_forward_parity():
    """No batch statistics: training and eval forwards are the same function."""
    torch.manual_seed(1)
    cfg = tiny("implicit_gon", "mnist", nz=4, image_size=16, hidden=(32, 32, 32, 32))
    module, template, tm = networks(cfg)
    variables = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)
    z = torch.randn(2, 4)
    with torch.no_grad():
        forward_diffs([(jit(module.apply)(variables, jnp.asarray(z.numpy())), tm.decode(z, 16), "image")], "forward")


def test_variational_gon_forward_parity():
    """Train mode samples z' = mu + eps exp(logvar / 2): eps is read off the JAX forward (the
    decoder's input) and handed to PyTorch. Eval mode decodes mu."""
    torch.manual_seed(2)
    cfg = tiny("variational_gon", "vae32", nz=8, ngf=4)
    module, template, tm = networks(cfg)
    tm.train()
    variables = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)

    def train_forward(variables, z, key):
        latents = []

        def record_decoder_input(next_fun, args, kwargs, context):
            if isinstance(context.module, ConvDecoder) and context.method_name == "__call__":
                latents.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record_decoder_input):
            out, updates = module.apply(variables, z, train=True, mutable=["batch_stats"], rngs={"reparam": key})
        return out, updates, latents[0]

    z = torch.randn(4, 8)
    (p, mu, logvar), updates, latent = jit(train_forward)(variables, jnp.asarray(z.numpy()), jax.random.key(3))
    eps = np.array((latent - mu) / jnp.exp(0.5 * logvar))
    t_p, t_mu, t_logvar = tm(z, eps=torch.from_numpy(eps))
    forward_diffs([(p, t_p, "image"), (mu, t_mu, "mu"), (logvar, t_logvar, "logvar")], "train")
    assert_tree_close(updates["batch_stats"], torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)["batch_stats"],
                      "running statistics")

    tm.eval()
    variables = {**variables, **updates}
    outs = jit(functools.partial(module.apply, train=False))(variables, jnp.asarray(z.numpy()))
    with torch.no_grad():
        forward_diffs(list(zip(outs, tm(z), ("image", "mu", "logvar"))), "eval")


def test_cae_forward_parity():
    """No batch statistics: training and eval forwards are the same function."""
    torch.manual_seed(4)
    cfg = tiny("cae", "mvtec", widths=(4, 8))
    module, template, tm = networks(cfg)
    variables = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        forward_diffs([(jit(module.apply)(variables, jnp.asarray(nhwc(x))), tm(x), "reconstruction")], "forward")


# ----------------------------------------------------------------------------------------
# The GON step: the inner jax.grad against torch.autograd.grad(create_graph=True).


def away_from_init(tm):
    """BatchNorm affine parameters drawn away from their init (scale 1, bias 0), as in a trained
    network.

    At z0 = 0 every sample has the same first-layer activations, so the first BatchNorm sees
    zero batch variance and outputs exactly its bias (docs/METHODS.md 2.1). With the init bias 0
    the ELU after it is evaluated at 0, where its second derivative jumps (0 for x > 0,
    1 for x <= 0): the second-order GON gradient is then decided by the sign of rounding
    noise (the batch mean of identical values is exact in PyTorch's BatchNorm, a few ulp off
    in XLA's reduction, amplified by 1/sqrt(eps) ~ 316), and even float64 runs of the same
    formula disagree there (bn0 bias gradient 47 vs 66). Away from that kink both agree to
    1e-15 in float64.
    """
    with torch.no_grad():
        for m in tm.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


# The latent is a gradient through BatchNorm at zero batch variance (z0 = 0), which multiplies
# float32 rounding by up to 1/sqrt(eps); its float32 error depends on the CPU's kernels. On an
# AMD EPYC (AVX2) runner: JAX 6.75e-06 = 1.36e-5 of the latent's scale, PyTorch 4.4e-07, so the
# scale term is 2e-5 here (float64 agreement stays checked at 1e-12 below).
LATENT_RTOL = 2 * FORWARD_RTOL


def assert_latent_as_accurate(z_jax, z_torch32, z64):
    """The gradient criterion (parity_helpers) for the latent z = -grad at z0: max |z_jax -
    z64| <= GRAD_RATIO * max |z_torch32 - z64| + LATENT_RTOL * max |z64|."""
    z64 = np.asarray(z64, np.float64)
    err_jax = float(np.max(np.abs(np.asarray(z_jax) - z64)))
    err_torch = float(np.max(np.abs(z_torch32.detach().numpy() - z64)))
    scale = float(np.max(np.abs(z64)))
    assert err_jax <= GRAD_RATIO * err_torch + LATENT_RTOL * scale, (
        f"float32 latent: |jax - float64| {err_jax:.3g}, |torch - float64| {err_torch:.3g}, scale {scale:.3g}")


def test_conv_gon_step_gradient_parity():
    """MNIST conv GON step, BatchNorm in training mode in both passes (zero batch variance at
    z0 = 0). float64: JAX and PyTorch agree to rounding (loss, latent, gradients, running
    statistics moved twice). float32: latent and gradients as accurate as PyTorch's own."""
    torch.manual_seed(5)
    cfg = tiny("conv_gon", "mnist", nz=8, ngf=4)
    module, template, tm = networks(cfg)
    away_from_init(tm)
    tm.train()
    x = torch.rand(4, 1, 28, 28)
    step = jit(lambda v, x: origin.gon_value_and_grad(v, x, model=module))
    variables32 = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)  # read before the step moves the statistics
    tm64 = torch_copy(tm, functools.partial(ref.build_model, cfg), torch.float64)
    with jax.enable_x64(True):
        template64 = float64_template(template)
        variables64 = torch_to_flax(tm64.state_dict(), template64, variant(cfg).torch_names)

    z64_t, loss64_t = ref.conv_gon_step(tm64, x.double(), cfg.nz)
    loss64_t.backward()
    z64_t = z64_t.detach().numpy()
    z_scale = float(np.max(np.abs(z64_t)))
    with jax.enable_x64(True):
        (loss, (stats, z, _)), grads = step(variables64, jnp.asarray(nhwc(x.double())))
        assert z.dtype == jnp.float64
        np.testing.assert_allclose(float(loss), loss64_t.item(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(z), z64_t, rtol=0, atol=1e-12 * z_scale)
        want64 = torch_grads_as_flax(tm64, template64, variant(cfg).torch_names)
        g_scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(want64))
        assert_tree_close(grads, want64, "float64 GON step gradient", rtol=0, atol=1e-12 * g_scale)
        # Two training passes per step (inner, outer): the running statistics moved twice.
        assert_tree_close(stats, torch_to_flax(tm64.state_dict(), template64, variant(cfg).torch_names)["batch_stats"],
                          "running statistics", rtol=1e-12, atol=1e-14)

    z32_t, loss32_t = ref.conv_gon_step(tm, x, cfg.nz)
    loss32_t.backward()
    (loss32, (_, z32, _)), grads32 = step(variables32, jnp.asarray(nhwc(x)))
    np.testing.assert_allclose(float(loss32), loss32_t.item(), rtol=1e-5)
    assert_latent_as_accurate(z32, z32_t, z64_t)
    assert_grads_as_accurate(grads32, torch_grads_as_flax(tm, template, variant(cfg).torch_names), want64,
                             "float32 GON step gradient")


def test_implicit_gon_step_gradient_parity():
    torch.manual_seed(6)
    cfg = tiny("implicit_gon", "mnist", nz=4, image_size=8, hidden=(16, 16, 16, 16))
    module, template, tm = networks(cfg)
    variables = torch_to_flax(tm.state_dict(), template, variant(cfg).torch_names)
    x = torch.rand(3, 1, 8, 8)

    def torch_step(model, x):
        target = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 1)  # (B, H*W, C), pixel h*W + w

        def loss_at(z):
            return ref.implicit_loss(model(ref.implicit_input(z, ref.coordinate_grid(8, 8).to(x.dtype))), target)

        z = ref.gradient_origin_latent(loss_at, x.shape[0], cfg.nz, x.dtype)
        return z, loss_at(z)

    tm64 = torch_copy(tm, functools.partial(ref.build_model, cfg), torch.float64)
    z64_t, loss64_t = torch_step(tm64, x.double())
    loss64_t.backward()
    z_t, t_loss = torch_step(tm, x)
    t_loss.backward()

    (loss, (_, z, _)), grads = jit(lambda v, x: origin.gon_value_and_grad(v, x, model=module))(
        variables, jnp.asarray(nhwc(x)))
    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-5)
    assert_latent_as_accurate(z, z_t, z64_t.detach().numpy())
    names = variant(cfg).torch_names
    assert_grads_as_accurate(grads, torch_grads_as_flax(tm, template, names),
                             torch_grads_as_flax(tm64, template, names), "implicit GON step gradient")
