"""Numerical parity of the f-UNetGAN networks, losses and optimiser with the PyTorch mirror.

The PyTorch side is funetgan_jax/torch_reference.py plus the loss formulas of docs/METHODS.md
1.5/1.6 written out below; weights go PyTorch -> Flax through anomaly_core.interop.torch_import with
funetgan_jax/torch_names.py's name maps.
Tolerances and why they are what they are: tests/parity_helpers.py (forward outputs within
1e-5 of the output scale; gradients as accurate as PyTorch's own float32 ones, measured
against float64). Tiny networks (width 4, 32x32, batch 2) and one moderate discriminator.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anomaly_core.interop.torch_import import torch_to_flax
from funetgan_jax import losses, mixing
from funetgan_jax.cbam import CBAM
from funetgan_jax.build import (build_discriminator, build_encoder, build_generator, default_model_config,
                                init_variables, input_shape)
from funetgan_jax.torch_names import NAME_MAPS

torch = pytest.importorskip("torch")
ref = pytest.importorskip("funetgan_jax.torch_reference")
from parity_helpers import (assert_grads_as_accurate, assert_tree_close, forward_diffs, jit,  # noqa: E402
                            nhwc, torch_backward, torch_copy, torch_grads_as_flax)

pytestmark = pytest.mark.parity

MUTABLE = ("spectral", "batch_stats")
BATCH = 2
BUILDERS = {"generator": build_generator, "discriminator": build_discriminator, "encoder": build_encoder}


def tiny_config(**overrides):
    cfg = default_model_config()
    cfg.update(dict(image_size=32, width=4, z_dim=8))
    cfg.update(overrides)
    return cfg


def networks(name, cfg):
    """(Flax module, its variable shapes, PyTorch mirror) of one network of config.model."""
    module = BUILDERS[name](cfg)
    template = jax.eval_shape(lambda: init_variables(module, jax.random.key(0), input_shape(module, cfg, BATCH)))
    return module, template, ref.build_network(name, cfg)


def torch_inputs(name, cfg, count):
    if name == "generator":
        return [torch.randn(BATCH, cfg.z_dim) for _ in range(count)]
    return [torch.rand(BATCH, cfg.channels, cfg.image_size, cfg.image_size) for _ in range(count)]


def warm_up(torch_module, inputs):
    """Training forwards without gradients, so the spectral-norm vectors are past their random
    start, as in any trained network (at the start sigma is underestimated, which inflates
    activations)."""
    torch_module.train()
    with torch.no_grad():
        for x in inputs:
            torch_module(x)


def check_forward(name, cfg, outputs, call_kwargs=None, steps=2):
    """`steps` training forwards (JAX state threaded from one to the next), then one eval forward.

    After every training forward the updated spectral-norm vectors and BatchNorm running
    statistics must equal PyTorch's. outputs(jax_out, torch_out) -> [(jax, torch, name)].
    Returns the largest max |diff| / S per output name.
    """
    call_kwargs = call_kwargs or {}
    module, template, torch_module = networks(name, cfg)
    inputs = torch_inputs(name, cfg, steps)
    warm_up(torch_module, inputs + inputs)
    variables = torch_to_flax(torch_module.state_dict(), template, NAME_MAPS[name])
    train_apply = jit(functools.partial(module.apply, train=True, mutable=MUTABLE, **call_kwargs))
    eval_apply = jit(functools.partial(module.apply, train=False, **call_kwargs))
    worst = {}

    def record(diffs):
        for k, v in diffs.items():
            worst[k] = max(worst.get(k, 0.0), v)

    for step, x in enumerate(inputs):
        out, updates = train_apply(variables, jnp.asarray(nhwc(x)))
        variables = {**variables, **updates}
        with torch.no_grad():
            t_out = torch_module(x, **call_kwargs)
        record(forward_diffs(outputs(out, t_out), f"{name} train forward {step + 1}"))
        expected = torch_to_flax(torch_module.state_dict(), template, NAME_MAPS[name])
        for col in updates:
            assert_tree_close(variables[col], expected[col], f"{name} {col} after {step + 1} training forwards")
    torch_module.eval()
    with torch.no_grad():
        t_out = torch_module(inputs[0], **call_kwargs)
    record(forward_diffs(outputs(eval_apply(variables, jnp.asarray(nhwc(inputs[0]))), t_out), f"{name} eval"))
    return worst


def single_output(out, t_out):
    return [(out, t_out, "output")]


def discriminator_outputs(out, t_out):
    return [(out.global_logit, t_out[0], "global logit"), (out.pixel_logits, t_out[1], "pixel logits"),
            (out.global_features, t_out[2], "global features"), (out.pixel_features, t_out[3], "pixel features")]


@pytest.mark.parametrize("spectral_norm", ["biggan", "torch"])
def test_generator_forward_parity(spectral_norm):
    """'biggan' is the original's spectral norm (one power iteration in every forward, eval
    included; state_dict u0/sv0), 'torch' is torch.nn.utils.spectral_norm."""
    torch.manual_seed(0)
    check_forward("generator", tiny_config(spectral_norm=spectral_norm), single_output)


def test_generator_forward_parity_linear_output():
    """config.model.generator_output='linear' (no tanh) in both implementations."""
    torch.manual_seed(0)
    check_forward("generator", tiny_config(generator_output="linear"), single_output)


@pytest.mark.parametrize("block", ["residual", "conv"])
@pytest.mark.parametrize("attention", ["none", "cbam"])
def test_discriminator_forward_parity(block, attention):
    torch.manual_seed(1)
    check_forward("discriminator", tiny_config(d_block=block, d_attention=attention), discriminator_outputs,
                  {"return_features": True})


@pytest.mark.parametrize("d_norm,pool", [("none", "sum"), ("none", "mean"), ("instance", "mean")])
def test_discriminator_forward_parity_dynamics_switches(d_norm, pool):
    """config.model.d_norm and d_global_pool (the training configs' critic) in both renderings."""
    torch.manual_seed(4)
    check_forward("discriminator", tiny_config(d_norm=d_norm, d_global_pool=pool), discriminator_outputs,
                  {"return_features": True})


@pytest.mark.parametrize("spectral_norm", ["biggan", "torch"])
def test_encoder_forward_parity(spectral_norm):
    """With CBAM in the encoder blocks (config.model.e_attention); the gradient test below
    covers the default encoder without it. 'biggan' mixes both spectral norms, as the original."""
    torch.manual_seed(3)
    check_forward("encoder", tiny_config(e_attention="cbam", spectral_norm=spectral_norm), single_output)


def test_discriminator_forward_parity_torch_spectral_norm():
    torch.manual_seed(2)
    check_forward("discriminator", tiny_config(spectral_norm="torch"), discriminator_outputs,
                  {"return_features": True})


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_biggan_spectral_norm_gradient_parity(kind):
    """One BigGAN-style layer (the original's SNConv2d / SNLinear) in training mode: output,
    the weight and bias gradients of a loss through sigma, and the stored u and sigma."""
    from funetgan_jax.layers import SNConv, SNDense

    torch.manual_seed(6)
    if kind == "conv":
        t_layer, layer = ref.BigGANConv2d(5, 7, 3, padding=1), SNConv(7, 3, padding=1, sn_mode="biggan")
        x = torch.randn(2, 5, 6, 6)
        x_jax = jnp.asarray(nhwc(x))
    else:
        t_layer, layer = ref.BigGANLinear(6, 4), SNDense(4, sn_mode="biggan")
        x = torch.randn(3, 6)
        x_jax = jnp.asarray(x.numpy())
    t_layer.train()
    params, state = split(torch_to_flax_layer(t_layer, kind))

    def loss_fn(p):
        y, new_state = layer.apply({"params": p, **state}, x_jax, train=True, mutable=["spectral"])
        return jnp.sum(jnp.sin(y)), (y, new_state)

    (loss, (y, new_state)), grads = jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    t_y = t_layer(x)
    t_loss = torch.sin(t_y).sum()
    t_loss.backward()
    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-5)
    t_y = t_y.detach()
    np.testing.assert_allclose(np.asarray(y), nhwc(t_y), atol=1e-5 * max(1.0, float(t_y.abs().max())))
    w_grad = t_layer.weight.grad.numpy()
    w_grad = np.transpose(w_grad, (2, 3, 1, 0)) if kind == "conv" else w_grad.T
    np.testing.assert_allclose(np.asarray(grads["kernel"]), w_grad, atol=1e-5 * np.abs(w_grad).max())
    np.testing.assert_allclose(np.asarray(grads["bias"]), t_layer.bias.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new_state["spectral"]["u"]), t_layer.u0.numpy()[0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(new_state["spectral"]["sigma"]), t_layer.sv0.numpy(), rtol=1e-6)


def torch_to_flax_layer(t_layer, kind):
    """One BigGAN layer's tensors in the Flax layout (the converter's rules for one layer)."""
    w = t_layer.weight.detach().numpy()
    return {"params": {"kernel": jnp.asarray(np.transpose(w, (2, 3, 1, 0)) if kind == "conv" else w.T),
                       "bias": jnp.asarray(t_layer.bias.detach().numpy())},
            "spectral": {"u": jnp.asarray(t_layer.u0.numpy()[0]), "sigma": jnp.asarray(t_layer.sv0.numpy())}}


def test_discriminator_forward_parity_moderate_size():
    """Width 16 at 64x64 (filters 16..256, 2.1 M parameters), residual blocks with CBAM."""
    torch.manual_seed(2)
    check_forward("discriminator", tiny_config(image_size=64, width=16, d_attention="cbam"), discriminator_outputs,
                  {"return_features": True})


# ----------------------------------------------------------------------------------------
# Gradients: the PyTorch losses are docs/METHODS.md 1.5 / 1.6 written out independently.


def torch_pixel_sum(d_dec):
    return d_dec.sum(dim=(1, 2, 3))


def torch_discriminator_loss(D, real, fake, lam, a, lambda_gp=10.0, lambda_mix=1.0):
    """L_D with Mixup (lam (B,1,1,1), real weight) and both WGAN-GP terms at xh = a*real + (1-a)*fake."""
    enc_r, dec_r = D(real)
    enc_f, dec_f = D(fake)
    _, dec_m = D(lam * real + (1 - lam) * fake)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    enc_h, dec_h = D(x_hat)
    (g_enc,) = torch.autograd.grad(enc_h.sum(), x_hat, create_graph=True)
    (g_dec,) = torch.autograd.grad(dec_h.sum(), x_hat, create_graph=True)
    gp_enc = ((g_enc.flatten(1).norm(dim=1) - 1) ** 2).mean()
    gp_dec = ((g_dec.flatten(1).norm(dim=1) - 1) ** 2).mean()
    l_enc = enc_f.mean() - enc_r.mean() + lambda_gp * gp_enc
    l_dec = torch_pixel_sum(dec_f).mean() - torch_pixel_sum(dec_r).mean() + lambda_gp * gp_dec
    l_mix = ((dec_m - ((1 - lam) * dec_f + lam * dec_r)) ** 2).mean()
    return l_enc + l_dec + lambda_mix * l_mix


def torch_generator_loss(g, d, z):
    enc, dec = d(g(z))
    return -enc.mean() - torch_pixel_sum(dec).mean()


def torch_encoder_loss(e, g, d, x, kappa=1.0):
    """docs/METHODS.md 1.6: image term + kappa * both feature terms, gradients through frozen D and G."""
    xr = g(e(x))
    with torch.no_grad():
        _, _, f_enc_x, f_dec_x = d(x, return_features=True)
    _, _, f_enc_xr, f_dec_xr = d(xr, return_features=True)
    return ((xr - x) ** 2).mean() + kappa * (((f_enc_xr - f_enc_x) ** 2).mean() + ((f_dec_xr - f_dec_x) ** 2).mean())


@pytest.fixture(scope="module")
def trio():
    """Tiny G (with its CBAM blocks), D and E in their default variants, warmed up in PyTorch.

    The discriminator is the residual one without attention: with CBAM (the default) its loss
    gradient (second order through the penalties) takes twice as long to compile, so the
    CBAM part of that second-order path has its own small test below.
    Returns (cfg, {name: (flax module, template, torch module, float64 copy builder)}).
    """
    torch.manual_seed(4)
    # Torch's spectral norm: with the BigGAN layers' different initial draws this tiny D starts
    # with penalties of ~3e4 (instance norm on near-constant features), where XLA:CPU's
    # unoptimised (FAST_COMPILE) code lands 0.3 % from PyTorch while float64 PyTorch agrees
    # with float32 PyTorch; BigGAN spectral norm's gradient has its own test below.
    cfg = tiny_config(d_attention="none", spectral_norm="torch")
    nets = {}
    for name in BUILDERS:
        module, template, torch_module = networks(name, cfg)
        warm_up(torch_module, torch_inputs(name, cfg, 3))
        copy64 = functools.partial(torch_copy, torch_module, functools.partial(ref.build_network, name, cfg),
                                   torch.float64)
        nets[name] = (module, template, torch_module, copy64)
    return cfg, nets


def split(variables):
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def test_discriminator_loss_gradient_parity(trio):
    """L_D with both gradient penalties and Mixup, D in training mode. Mixup and interpolation
    weights come from the port's own mixing functions and are handed to PyTorch."""
    _, nets = trio
    D, template, tD, copy64 = nets["discriminator"]
    names = NAME_MAPS["discriminator"]
    k_real, k_fake, k_mix, k_gp = jax.random.split(jax.random.key(5), 4)
    real = jax.random.uniform(k_real, (BATCH, 32, 32, 3))
    fake = jax.random.uniform(k_fake, (BATCH, 32, 32, 3))
    mixed, lam = mixing.mixup(k_mix, real, fake)  # lam (B, 1, 1, 1): weight of the real image
    a = mixing.interpolation_weights(k_gp, BATCH, 3, "per_channel")  # (B, 1, 1, C), reference shape
    torch_args = [torch.from_numpy(np.array(v)).permute(0, 3, 1, 2) for v in (real, fake, lam, a)]

    tD.train()
    params, state = split(torch_to_flax(tD.state_dict(), template, names))  # before PyTorch's forwards move u, v
    tD64 = copy64()
    torch_backward([tD64], torch_discriminator_loss, *[t.double() for t in torch_args])
    t_loss = torch_backward([tD], torch_discriminator_loss, *torch_args)

    def loss_fn(p):
        def d_fn(x, s):
            return D.apply({"params": p, **s}, x, train=True, mutable=MUTABLE)

        def forward(s, x):
            out, s = d_fn(x, s)
            return s, (out.global_logit, out.pixel_logits)

        # Real, fake, mixed in this order, each forward starting from the state the previous
        # one left, as losses.discriminator_loss_from_networks does; one traced body
        # (lax.scan) instead of three cuts the compile time by a third.
        s, (enc, dec) = jax.lax.scan(forward, state, jnp.stack([real, fake, mixed]))
        x_hat = a * real + (1 - a) * fake
        (gp_enc, gp_dec), s = losses.gradient_penalties(lambda x: d_fn(x, s), x_hat, has_aux=True)
        loss, _ = losses.discriminator_loss((enc[0], dec[0]), (enc[1], dec[1]), gp_enc, gp_dec, d_mixed=dec[2],
                                            mix_weight=lam, lambda_gp=10.0, lambda_mix=1.0)
        return loss, s

    (loss, new_state), grads = jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    np.testing.assert_allclose(float(loss), t_loss, rtol=1e-5)
    assert_grads_as_accurate(grads, torch_grads_as_flax(tD, template, names),
                             torch_grads_as_flax(tD64, template, names), "discriminator loss gradient")
    expected = torch_to_flax(tD.state_dict(), template, names)  # four forwards' worth of updates
    for col in new_state:
        assert_tree_close(new_state[col], expected[col], f"{col} after the discriminator step")


def test_gradient_penalty_through_cbam_parity():
    """Both penalties' second-order path through CBAM with its BatchNorm on batch statistics,
    which couples the samples (docs/METHODS.md 1.1 note): PyTorch's hand-written batch-norm
    double backward against JAX's autodiff, on one CBAM block standing in for the critic
    (global logit = a fixed weighting of the block's output summed per sample, pixel logits =
    the same summed over channels)."""
    torch.manual_seed(9)
    channels, reduction = 8, 4
    block = ref.CBAM(channels, reduction, "batch").train()
    block64 = torch_copy(block, lambda: ref.CBAM(channels, reduction, "batch"), torch.float64)
    x, w = torch.rand(BATCH, channels, 8, 8), torch.randn(1, channels, 8, 8)

    def torch_loss(block, x, w):
        x = x.clone().requires_grad_(True)
        weighted = block(x) * w
        enc, dec = weighted.sum(dim=(1, 2, 3)), weighted.sum(dim=1, keepdim=True)
        (g_enc,) = torch.autograd.grad(enc.sum(), x, create_graph=True)
        (g_dec,) = torch.autograd.grad(dec.sum(), x, create_graph=True)
        gp = ((g_enc.flatten(1).norm(dim=1) - 1) ** 2).mean() + ((g_dec.flatten(1).norm(dim=1) - 1) ** 2).mean()
        return gp + torch_pixel_sum(dec).mean()

    def flax_layout(tensors):
        """CBAM tensors (parameters or their gradients) in funetgan_jax.cbam's layout, by hand."""
        t = {k: v.detach().numpy().copy() for k, v in tensors.items()}  # copies: torch updates in place
        gate, spatial = "ChannelGate.mlp", "SpatialGate.spatial"
        return {"channel_gate": {"mlp_hidden": {"kernel": t[f"{gate}.1.weight"].T, "bias": t[f"{gate}.1.bias"]},
                                 "mlp_out": {"kernel": t[f"{gate}.3.weight"].T, "bias": t[f"{gate}.3.bias"]}},
                "spatial_gate": {"conv": {"kernel": t[f"{spatial}.conv.weight"].transpose(2, 3, 1, 0)},
                                 "bn": {"scale": t[f"{spatial}.bn.weight"], "bias": t[f"{spatial}.bn.bias"]}}}

    def running_statistics(block):
        bn = block.SpatialGate.spatial.bn
        return {"spatial_gate": {"bn": {"mean": bn.running_mean.numpy().copy(), "var": bn.running_var.numpy().copy()}}}

    def grads_of(block):
        return flax_layout({k: p.grad for k, p in block.named_parameters()})

    params, stats = flax_layout(dict(block.named_parameters())), running_statistics(block)
    torch_backward([block64], torch_loss, x.double(), w.double())
    t_loss = torch_backward([block], torch_loss, x, w)
    module = CBAM(reduction, "batch")
    x_j, w_j = jnp.asarray(nhwc(x)), jnp.asarray(nhwc(w))

    def loss_fn(params):
        def d_fn(x):
            out, updates = module.apply({"params": params, "batch_stats": stats}, x, train=True,
                                        mutable=["batch_stats"])
            weighted = out * w_j
            dec = jnp.sum(weighted, axis=-1, keepdims=True)
            return (jnp.sum(weighted, axis=(1, 2, 3)), dec), (updates["batch_stats"], dec)

        (gp_enc, gp_dec), (new_stats, dec) = losses.gradient_penalties(d_fn, x_j, has_aux=True)
        return gp_enc + gp_dec + jnp.mean(jnp.sum(dec, axis=(1, 2, 3))), new_stats

    (loss, new_stats), grads = jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    np.testing.assert_allclose(float(loss), t_loss, rtol=1e-5)
    assert_grads_as_accurate(grads, grads_of(block), grads_of(block64), "CBAM gradient-penalty gradient")
    assert_tree_close(new_stats, running_statistics(block), "CBAM running statistics")


def test_generator_loss_gradient_parity(trio):
    cfg, nets = trio
    G, g_template, tG, g_copy64 = nets["generator"]
    D, d_template, tD, d_copy64 = nets["discriminator"]
    torch.manual_seed(6)
    z = torch.randn(BATCH, cfg.z_dim)
    tG.train()
    tD.train()
    g_params, g_state = split(torch_to_flax(tG.state_dict(), g_template, NAME_MAPS["generator"]))
    d_vars = torch_to_flax(tD.state_dict(), d_template, NAME_MAPS["discriminator"])
    tG64, tD64 = g_copy64(), d_copy64()
    torch_backward([tG64, tD64], torch_generator_loss, z.double())
    t_loss = torch_backward([tG, tD], torch_generator_loss, z)

    def loss_fn(p):
        fake, _ = G.apply({"params": p, **g_state}, jnp.asarray(z.numpy()), train=True, mutable=MUTABLE)
        d_out, _ = D.apply(d_vars, fake, train=True, mutable=MUTABLE)
        return losses.generator_loss(d_out)[0]

    loss, grads = jit(jax.value_and_grad(loss_fn))(g_params)
    np.testing.assert_allclose(float(loss), t_loss, rtol=1e-5)
    g_names = NAME_MAPS["generator"]
    assert_grads_as_accurate(grads, torch_grads_as_flax(tG, g_template, g_names),
                             torch_grads_as_flax(tG64, g_template, g_names), "generator loss gradient")


def test_encoder_loss_gradient_parity(trio):
    """losses.encoder_loss (f-AnoGAN izi_f): E in training mode, G and D frozen in eval mode."""
    _, nets = trio
    G, g_template, tG, g_copy64 = nets["generator"]
    D, d_template, tD, d_copy64 = nets["discriminator"]
    E, e_template, tE, e_copy64 = nets["encoder"]
    torch.manual_seed(7)
    x = torch.rand(BATCH, 3, 32, 32)
    tG.eval()
    tD.eval()
    tE.train()
    g_vars = torch_to_flax(tG.state_dict(), g_template, NAME_MAPS["generator"])
    d_vars = torch_to_flax(tD.state_dict(), d_template, NAME_MAPS["discriminator"])
    e_params, e_state = split(torch_to_flax(tE.state_dict(), e_template, NAME_MAPS["encoder"]))
    tE64, tG64, tD64 = e_copy64(), g_copy64(), d_copy64()
    torch_backward([tE64, tG64, tD64], torch_encoder_loss, x.double())
    t_loss = torch_backward([tE, tG, tD], torch_encoder_loss, x)

    def loss_fn(p):
        return losses.encoder_loss(
            lambda inp, s: E.apply({"params": p, **s}, inp, train=True, mutable=MUTABLE),
            lambda z: G.apply(g_vars, z, train=False),
            lambda inp: D.apply(d_vars, inp, train=False, return_features=True),
            e_state, jnp.asarray(nhwc(x)), kappa=1.0)

    (loss, _), grads = jit(jax.value_and_grad(loss_fn, has_aux=True))(e_params)
    np.testing.assert_allclose(float(loss), t_loss, rtol=1e-5)
    e_names = NAME_MAPS["encoder"]
    assert_grads_as_accurate(grads, torch_grads_as_flax(tE, e_template, e_names),
                             torch_grads_as_flax(tE64, e_template, e_names), "encoder loss gradient")


def test_adam_steps_match_torch(trio):
    """optax.adam and torch.optim.Adam (docs/METHODS.md 1.5: lr 1e-4, betas (0.0, 0.9), eps 1e-8)
    fed the same gradients give the same parameters, step after step.

    Each side's own gradients would not do: the first Adam step is lr * g / (|g| + eps), so a
    gradient that is pure rounding noise (exactly 0 in exact arithmetic, e.g. a convolution
    bias before instance norm) moves its parameter by +-lr with a sign the rounding decides.
    Adam is elementwise, so the optax side runs on all parameters concatenated into one
    vector (one small compiled program); the result is compared leaf by leaf in the Flax
    layout.
    """
    _, nets = trio
    _, template, tD, _ = nets["discriminator"]
    lr, betas, eps = 1e-4, (0.0, 0.9), 1e-8
    leaves, treedef = jax.tree.flatten(torch_to_flax(tD.state_dict(), template, NAME_MAPS["discriminator"])["params"])
    shapes = [leaf.shape for leaf in leaves]
    splits = np.cumsum([leaf.size for leaf in leaves])[:-1]

    def ravel(tree):
        return jnp.asarray(np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(tree)]))

    def unravel(flat):
        return treedef.unflatten([p.reshape(shape) for p, shape in zip(np.split(np.asarray(flat), splits), shapes)])

    tx = optax.adam(lr, b1=betas[0], b2=betas[1], eps=eps)
    flat = ravel(leaves)
    opt_state = tx.init(flat)

    @jit
    def step(g, s, p):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    torch_opt = torch.optim.Adam(tD.parameters(), lr=lr, betas=betas, eps=eps)
    gen = torch.Generator().manual_seed(8)
    for i in range(3):
        for p in tD.parameters():  # magnitudes from 1e-9 to 1, so eps matters for some
            p.grad = torch.randn(p.shape, generator=gen) * 10.0 ** torch.randint(-9, 1, p.shape, generator=gen)
        grads = ravel(torch_grads_as_flax(tD, template, NAME_MAPS["discriminator"]))
        torch_opt.step()
        flat, opt_state = step(grads, opt_state, flat)
        assert_tree_close(unravel(flat), torch_to_flax(tD.state_dict(), template, NAME_MAPS["discriminator"])["params"],
                          f"parameters after Adam step {i + 1}", rtol=1e-6, atol=1e-9)
