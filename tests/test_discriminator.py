"""U-Net discriminator (four variants) and the ResidualConv block."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.networks.summary import count_params
from funetgan_jax.build import build_discriminator, default_model_config, init_variables
from funetgan_jax.discriminator import ATTENTIONS, D_BLOCKS, ResidualConv, UNetDiscriminator
from funetgan_jax.layers import instance_norm, pool_2x2
from test_layers import random_variables

# Tiny models: XLA's optimisation passes and fusion emitters cost more compile time than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                   "xla_cpu_use_fusion_emitters": False})
B, SIZE, WIDTH = 2, 32, 4
VARIANTS = [(block, attention) for block in D_BLOCKS for attention in ATTENTIONS]


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin, cout):
    return cin * cout + cout


def cbam(c, r=16):
    h = max(1, c // r)
    return dense(c, h) + dense(h, c) + conv(7, 2, 1, bias=False) + 2  # + BatchNorm scale, bias


def block(cin, cout, down, shortcut, attention):
    n = conv(3, cin, cout) + conv(3, cout, cout)
    if shortcut and (cin != cout or down):
        n += conv(1, cin, cout)
    return n + (cbam(cout) if attention else 0)


def _drop(tree, names):
    """The variable tree without the subtrees called `names` (and without emptied dicts)."""
    out = {}
    for key, value in tree.items():
        if key in names:
            continue
        if isinstance(value, dict):
            value = _drop(value, names)
            if not value:
                continue
        out[key] = value
    return out


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (B, SIZE, SIZE, 3))


def _values(module, x, seed=0):
    return random_variables(jax.eval_shape(lambda r: module.init(r, x, train=False), jax.random.key(0)), seed)


@pytest.fixture(scope="module")
def full_variables(images):
    # residual + cbam holds every variable of the four variants; the others are subtrees.
    return _values(UNetDiscriminator(WIDTH, "residual", "cbam", cbam_reduction=4), images)


def _variant(full_variables, block_kind, attention):
    names = (("conv_sc",) if block_kind == "conv" else ()) + (("cbam",) if attention == "none" else ())
    return _drop(full_variables, names)


@pytest.mark.parametrize("block_kind,attention", VARIANTS)
def test_variant_variables_are_the_expected_subtree(full_variables, images, block_kind, attention):
    module = UNetDiscriminator(WIDTH, block_kind, attention, cbam_reduction=4)
    abstract = jax.eval_shape(lambda r: init_variables(module, r, images.shape), jax.random.key(0))
    variables = _variant(full_variables, block_kind, attention)
    assert jax.tree_util.tree_map(np.shape, abstract) == jax.tree_util.tree_map(np.shape, variables)
    params = variables["params"]
    has_shortcut = {name: "conv_sc" in p for name, p in params.items() if name.startswith(("enc", "dec"))}
    # Residual: every block changes width (or pools), so every shortcut is a 1x1 conv; 'conv': none.
    assert has_shortcut == {name: block_kind == "residual" for name in has_shortcut} and len(has_shortcut) == 9
    assert all(("cbam" in params[f"enc{i}"]) == (attention == "cbam") for i in range(1, 6))
    assert not any("cbam" in params[f"dec{i}"] for i in range(1, 5))


@pytest.fixture(scope="module", params=VARIANTS, ids=["-".join(v) for v in VARIANTS])
def run(request, full_variables, images):
    block_kind, attention = request.param
    module = UNetDiscriminator(WIDTH, block_kind, attention, cbam_reduction=4)
    variables = _variant(full_variables, block_kind, attention)

    @jit
    def go(variables, x):
        out_train, state = module.apply(variables, x, train=True, return_features=True,
                                        mutable=["spectral", "batch_stats"])
        # Eval after one training step: straight after init the stored u, v are random.
        out_eval, inter = module.apply({**variables, **state}, x, train=False, return_features=True,
                                       capture_intermediates=lambda mdl, _: mdl.name == "enc5",
                                       mutable=["intermediates"])
        return out_train, state, out_eval, inter["intermediates"]["enc5"]["__call__"][0]

    out_train, state, out_eval, e5 = jax.tree_util.tree_map(np.asarray, go(variables, images))
    return module, variables, state, out_train, out_eval, e5


def test_output_and_feature_shapes(run, images):
    module, variables, state, out_train, out_eval, e5 = run
    for out in (out_train, out_eval):
        assert out.global_logit.shape == (B,)
        assert out.pixel_logits.shape == (B, SIZE, SIZE, 1)
        assert out.global_features.shape == (B, 16 * WIDTH)
        assert out.pixel_features.shape == (B, SIZE, SIZE, WIDTH)
        assert all(np.all(np.isfinite(a)) for a in out)
        assert out.pixel_logits.std() > 0 and out.global_logit[0] != out.global_logit[1]
    assert e5.shape == (B, SIZE // 16, SIZE // 16, 16 * WIDTH)
    without = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, images)
    assert without.global_features is None and without.pixel_features is None
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables["spectral"], state["spectral"])
    # Every u, v moved by the training forward, except the (1,) u of the 1-output head (+-1 stays +-1).
    assert not changed["linear"].pop("u") and all(jax.tree_util.tree_leaves(changed))


def test_heads_by_hand(run):
    _, variables, state, _, out, e5 = run
    f_enc = np.where(e5 > 0, e5, 0.2 * e5).sum(axis=(1, 2))
    np.testing.assert_allclose(out.global_features, f_enc, rtol=1e-5, atol=1e-4)
    p, s = variables["params"], state["spectral"]
    k = p["linear"]["kernel"]
    u = s["linear"]["u"]
    if "v" in s["linear"]:  # 'torch' spectral norm: eval uses the stored pair
        sigma = u @ k.T @ s["linear"]["v"]
    else:  # 'biggan' (the default): eval runs one more power iteration from the stored u
        v = k @ u / np.linalg.norm(k @ u)
        u = k.T @ v / np.linalg.norm(k.T @ v)
        sigma = u @ k.T @ v
    np.testing.assert_allclose(out.global_logit, f_enc @ k[:, 0] / sigma + p["linear"]["bias"][0],
                               rtol=1e-4, atol=1e-4)
    head = p["output_conv"]
    np.testing.assert_allclose(out.pixel_logits, out.pixel_features @ head["kernel"][0, 0] + head["bias"],
                               rtol=1e-4, atol=1e-5)


def test_full_size_parameter_counts():
    w, c = 64, 3
    f = [w, 2 * w, 4 * w, 8 * w, 16 * w]
    for block_kind, attention in VARIANTS:
        sc, att = block_kind == "residual", attention == "cbam"
        expected = (
            block(c, f[0], False, sc, att)                        # e1   3 -> 64     (residual, none: 38,976)
            + block(f[0], f[1], True, sc, att)                    # e2  64 -> 128                   229,760
            + block(f[1], f[2], True, sc, att)                    # e3 128 -> 256                   918,272
            + block(f[2], f[3], True, sc, att)                    # e4 256 -> 512                 3,671,552
            + block(f[3], f[4], True, sc, att)                    # e5 512 -> 1024               14,683,136
            + block(f[4] + f[3], f[3], False, sc, False)          # d4 1536 -> 512               10,225,152
            + block(f[3] + f[2], f[2], False, sc, False)          # d3 768 -> 256                 2,556,672
            + block(f[2] + f[1], f[1], False, sc, False)          # d2 384 -> 128                   639,360
            + block(f[1] + f[0], f[0], False, sc, False)          # d1 192 -> 64                    159,936
            + dense(f[4], 1)                                      # SN linear                       1,025
            + conv(1, f[0], 1)                                    # pixel head                         65
        )
        # 1x1 shortcuts total 1,743,936; CBAM on e1..e5 adds 680 + 2,284 + 8,564 + 33,412 + 132,260.
        assert expected == {("residual", "none"): 33_123_906, ("residual", "cbam"): 33_301_106,
                            ("conv", "none"): 31_379_970, ("conv", "cbam"): 31_557_170}[(block_kind, attention)]
        cfg = default_model_config()
        cfg.d_block, cfg.d_attention = block_kind, attention
        module = build_discriminator(cfg)
        variables = jax.eval_shape(lambda r: init_variables(module, r, (1, 128, 128, 3)), jax.random.key(0))
        assert count_params(variables["params"]) == expected


def test_invalid_settings_and_sizes(images):
    with pytest.raises(ValueError, match="config.model.d_block"):
        UNetDiscriminator(block="dense")
    with pytest.raises(ValueError, match="config.model.d_attention"):
        UNetDiscriminator(attention="self")
    with pytest.raises(ValueError, match="divisible by 16"):
        jax.eval_shape(lambda r: UNetDiscriminator(WIDTH).init(r, jnp.zeros((1, 40, 40, 3)), train=False),
                       jax.random.key(0))
    with pytest.raises(ValueError, match="ResidualConv.pool"):
        ResidualConv(8, preact=False, down=True, pool="min")


@pytest.fixture(scope="module")
def block_variables():
    x = jax.random.normal(jax.random.key(3), (B, 8, 8, 3)) * 2 + 1
    # preact does not change the variables
    return _values(ResidualConv(6, preact=True, down=True), x, seed=4), np.asarray(x)


def _with_and_without_shortcut(module, variables, x):
    """The block's output and its residual branch alone, with the same variables (eval)."""
    return jit(lambda v, x: (module.apply(v, x, train=False),
                             module.clone(shortcut=False).apply(v, x, train=False)))(variables, x)


@pytest.mark.parametrize("preact", [True, False])
def test_learned_shortcut_order(block_variables, preact):
    variables, x = block_variables
    kw = dict(features=6, preact=preact, down=True)
    y, h = _with_and_without_shortcut(ResidualConv(**kw), variables, x)
    p, s = variables["params"]["conv_sc"], variables["spectral"]["conv_sc"]
    k = p["kernel"][0, 0]  # (in, out)
    w = k / (s["u"] @ k.T @ s["v"])
    xn = np.asarray(instance_norm(x))
    if preact:  # SN Conv1x1, then MaxPool
        want = pool_2x2(xn @ w + p["bias"], "max")
    else:  # MaxPool, then SN Conv1x1
        want = pool_2x2(xn, "max") @ w + p["bias"]
    np.testing.assert_allclose(y - h, want, rtol=1e-4, atol=1e-5)
    other = (pool_2x2(xn, "max") @ w + p["bias"]) if preact else pool_2x2(xn @ w + p["bias"], "max")
    assert not np.allclose(want, other, atol=1e-3)  # the two orders are distinguishable here


def test_identity_and_absent_shortcuts():
    x = jax.random.normal(jax.random.key(5), (B, 8, 8, 4)) * 3 - 1
    same = ResidualConv(4, preact=False, down=False)
    variables = _values(same, x, seed=6)
    assert set(variables["params"]) == {"conv1", "conv2"}  # in == out, no pooling: identity shortcut
    y, h = _with_and_without_shortcut(same, variables, x)
    np.testing.assert_allclose(y - h, instance_norm(x), rtol=1e-4, atol=1e-5)
    for preact, down in ((False, False), (True, True)):
        plain = jax.eval_shape(lambda r: ResidualConv(8, preact=preact, down=down, shortcut=False).init(
            r, x, train=False), jax.random.key(0))
        assert set(plain["params"]) == {"conv1", "conv2"}  # the 'conv' block: never a shortcut
