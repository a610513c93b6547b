"""anomaly_core.interop.torch_import with the methods' name maps (funetgan_jax/torch_names.py,
gon_jax/torch_names.py) and the convert_checkpoint command: layouts, both directions, error
messages, safe loading. Only tiny networks; the one XLA program is a tiny forward."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.interop import convert_checkpoint
from anomaly_core.interop.torch_import import TorchImportError, flax_to_torch, load_torch_checkpoint, torch_to_flax
from funetgan_jax import build as funetgan_build
from funetgan_jax import torch_names as funetgan_names
from gon_jax import build as gon_build
from gon_jax import torch_names as gon_names

torch = pytest.importorskip("torch")
funetgan_ref = pytest.importorskip("funetgan_jax.torch_reference")
gon_ref = pytest.importorskip("gon_jax.torch_reference")
from parity_helpers import forward_diffs, jit, nhwc  # noqa: E402

pytestmark = pytest.mark.parity
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # the mirrors draw their initial weights from torch's global generator


def funetgan_config(**overrides):
    cfg = funetgan_build.default_model_config()
    cfg.update(dict(image_size=32, width=4, z_dim=8, d_attention="cbam"))
    cfg.update(overrides)
    return cfg


@functools.lru_cache(maxsize=None)
def _template(build_key):
    """Variable shapes of a Flax network (jax.eval_shape traces its init: ~1 s, so cached)."""
    kind, name, overrides = build_key
    if kind == "funetgan":
        cfg = funetgan_config(**dict(overrides))
        module = {"generator": funetgan_build.build_generator, "discriminator": funetgan_build.build_discriminator,
                  "encoder": funetgan_build.build_encoder}[name](cfg)
        shape = funetgan_build.input_shape(module, cfg, 2)
        return jax.eval_shape(lambda: funetgan_build.init_variables(module, jax.random.key(0), shape))
    cfg = gon_config(*name, **dict(overrides))
    return jax.eval_shape(lambda: gon_build.init_variables(cfg, jax.random.key(0)))


def funetgan_pair(name, **overrides):
    """(variable shapes of the Flax network, a freshly initialised PyTorch mirror)."""
    template = _template(("funetgan", name, tuple(sorted(overrides.items()))))
    return template, funetgan_ref.build_network(name, funetgan_config(**overrides))


def gon_pair(kind, preset, **overrides):
    template = _template(("gon", (kind, preset), tuple(sorted(overrides.items()))))
    return template, gon_ref.build_model(gon_config(kind, preset, **overrides))


def gon_config(kind, preset, **overrides):
    cfg = gon_build.default_gon_model_config(kind, preset)
    cfg.update(overrides)
    return cfg


PAIRS = {
    "generator": lambda: funetgan_pair("generator"),
    "discriminator": lambda: funetgan_pair("discriminator"),
    "discriminator_conv": lambda: funetgan_pair("discriminator", d_block="conv", d_attention="none"),
    "encoder": lambda: funetgan_pair("encoder", e_attention="cbam"),
    "encoder_torch_sn": lambda: funetgan_pair("encoder", e_attention="cbam", spectral_norm="torch"),
    "discriminator_torch_sn": lambda: funetgan_pair("discriminator", spectral_norm="torch"),
    "conv_gon": lambda: gon_pair("conv_gon", "mnist", nz=8, ngf=4),
    "implicit_gon": lambda: gon_pair("implicit_gon", "mnist", nz=4, image_size=8, hidden=(8, 8, 8, 8)),
    "variational_gon": lambda: gon_pair("variational_gon", "vae32", nz=8, ngf=4),
    "cae": lambda: gon_pair("cae", "mvtec", widths=(4, 8)),
}
# The name map of each pair's network (the method packages own them).
NAMES = {"generator": funetgan_names.GENERATOR, "discriminator": funetgan_names.DISCRIMINATOR,
         "discriminator_conv": funetgan_names.DISCRIMINATOR, "encoder": funetgan_names.ENCODER,
         "encoder_torch_sn": funetgan_names.ENCODER, "discriminator_torch_sn": funetgan_names.DISCRIMINATOR,
         "conv_gon": gon_names.CONV_GON, "implicit_gon": gon_names.IMPLICIT_GON,
         "variational_gon": gon_names.VARIATIONAL_GON, "cae": gon_names.CAE}


def randomise_statistics(torch_module, gen):
    """Running statistics and counters away from their defaults, so a dropped or swapped one shows."""
    with torch.no_grad():
        for m in torch_module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(7)


def random_variables(template, seed=0):
    """Random values in the shapes of a Flax template (no init, no compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32)), template)


# ----------------------------------------------------------------------------------------
# Layouts on hand-made values


def test_layouts_of_one_conv_and_its_spectral_vectors():
    """Conv weight (O, I, kh, kw) -> kernel (kh, kw, I, O), element by element; and the Flax
    spectral norm (u^T W v with W the HWIO kernel viewed as (kh*kw*I, O) transposed and v in
    HWIO-flatten order) divides by exactly the sigma PyTorch divided by in its eval forward."""
    template, tm = PAIRS["encoder_torch_sn"]()
    tm.eval()
    with torch.no_grad():
        tm(torch.rand(2, 3, 32, 32))  # eval forward: weight = weight_orig / sigma(stored u, v)
    variables = torch_to_flax(tm.state_dict(), template, funetgan_names.ENCODER)
    layer = tm.residual_conv_1.conv1  # (8, 4, 3, 3): every axis distinct in size
    w = layer.weight_orig.detach().numpy()
    kernel = np.asarray(variables["params"]["block1"]["conv1"]["kernel"])
    assert kernel.shape == (3, 3, 4, 8)
    for o, i, h, x in [(0, 0, 0, 0), (7, 3, 2, 1), (5, 1, 0, 2), (2, 3, 1, 0)]:
        assert kernel[h, x, i, o] == w[o, i, h, x]
    spectral = variables["spectral"]["block1"]["conv1"]
    u, v = np.asarray(spectral["u"], np.float64), np.asarray(spectral["v"], np.float64)
    sigma = u @ (kernel.reshape(-1, 8).astype(np.float64).T @ v)
    # PyTorch computed sigma in float32 (a 36-term dot product), hence rtol 1e-5.
    np.testing.assert_allclose(np.transpose(kernel / sigma, (3, 2, 0, 1)), layer.weight.detach().numpy(), rtol=1e-5)


def test_layouts_of_the_original_biggan_spectral_norm():
    """The original's SNConv2d / SNLinear state: weight (O, I, kh, kw) -> kernel, u0 (1, O) ->
    spectral u (O,), sv0 (1,) -> spectral sigma (1,); in the original's encoder the first conv
    and the last linear layer are torch spectral_norm layers (weight_orig, weight_u, weight_v)."""
    template, tm = PAIRS["encoder"]()
    sd = tm.state_dict()
    assert sd["residual_conv_1.conv1.u0"].shape == (1, 8) and sd["residual_conv_1.conv1.sv0"].shape == (1,)
    assert "residual_conv_1.conv1.weight" in sd and "residual_conv_1.conv1.weight_orig" not in sd
    assert {"input_layer.weight_orig", "input_layer.weight_u", "input_layer.weight_v", "linear.weight_orig"} <= set(sd)
    with torch.no_grad():
        sd["residual_conv_1.conv1.u0"].normal_()
        sd["residual_conv_1.conv1.sv0"].fill_(2.5)
    variables = torch_to_flax(sd, template, funetgan_names.ENCODER)
    spectral = variables["spectral"]["block1"]["conv1"]
    assert set(spectral) == {"u", "sigma"} and set(variables["spectral"]["input_conv"]) == {"u", "v"}
    np.testing.assert_array_equal(np.asarray(spectral["u"]), sd["residual_conv_1.conv1.u0"].numpy()[0])
    np.testing.assert_array_equal(np.asarray(spectral["sigma"]), [2.5])
    w = sd["residual_conv_1.conv1.weight"].numpy()
    kernel = np.asarray(variables["params"]["block1"]["conv1"]["kernel"])
    assert kernel[2, 1, 3, 7] == w[7, 3, 2, 1]


def test_layouts_of_transposed_conv_dense_and_batch_norm():
    template, tm = PAIRS["variational_gon"]()
    randomise_statistics(tm, torch.Generator().manual_seed(0))
    variables = torch_to_flax(tm.state_dict(), template, gon_names.VARIATIONAL_GON)
    convt = tm.main[0].weight.detach().numpy()  # ConvTranspose2d (I=8, O=16, 4, 4)
    kernel = np.asarray(variables["params"]["decoder"]["convt0"]["kernel"])
    assert convt.shape == (8, 16, 4, 4) and kernel.shape == (4, 4, 16, 8)
    assert kernel[1, 3, 5, 2] == convt[2, 5, 1, 3]
    np.testing.assert_array_equal(np.asarray(variables["params"]["mu_head"]["kernel"]), tm.fc21.weight.detach().numpy().T)
    bn = tm.main[1]
    stats = variables["batch_stats"]["decoder"]["bn0"]
    np.testing.assert_array_equal(np.asarray(stats["mean"]), bn.running_mean.numpy())
    np.testing.assert_array_equal(np.asarray(stats["var"]), bn.running_var.numpy())
    np.testing.assert_array_equal(np.asarray(variables["params"]["decoder"]["bn0"]["scale"]), bn.weight.detach().numpy())


# ----------------------------------------------------------------------------------------
# Both directions


@pytest.mark.parametrize("network", list(PAIRS))
def test_round_trip_torch_flax_torch(network):
    """Every tensor comes back bit for bit, in the mirror's key order, num_batches_tracked kept;
    and the result loads with strict=True."""
    template, tm = PAIRS[network]()
    randomise_statistics(tm, torch.Generator().manual_seed(1))
    sd = tm.state_dict()
    back = flax_to_torch(torch_to_flax(sd, template, NAMES[network]), tm, NAMES[network])
    assert list(back) == list(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    tm.load_state_dict(back, strict=True)


@pytest.mark.parametrize("network", ["generator", "discriminator", "encoder", "discriminator_torch_sn", "conv_gon"])
def test_round_trip_flax_torch_flax(network):
    """Flax values -> state_dict built from the mapping alone (no PyTorch template) -> loaded
    strictly into the mirror -> back to Flax unchanged."""
    template, tm = PAIRS[network]()
    variables = random_variables(template)
    tm.load_state_dict(flax_to_torch(variables, None, NAMES[network]), strict=True)
    jax.tree.map(np.testing.assert_array_equal, torch_to_flax(tm.state_dict(), template, NAMES[network]), variables)


def converged_spectral_vectors(variables):
    """Each spectral-norm layer's (u, v) (or u and sigma) set to the top singular pair (value) of its kernel, as power
    iteration leaves them after training. (Straight after init they are random, u^T W v can be
    near 0, and an eval forward then divides by almost nothing on both sides alike.)"""
    params, spectral = variables["params"], variables["spectral"]

    def fix(p, s):
        if "u" in s:
            w = np.asarray(p["kernel"], np.float64).reshape(-1, s["u"].shape[0]).T  # (out, kh*kw*in), HWIO order
            left, values, right = np.linalg.svd(w, full_matrices=False)
            second = {"v": right[0]} if "v" in s else {"sigma": values[:1]}  # 'torch' | 'biggan' layer
            return {k: jnp.asarray(a, jnp.float32) for k, a in {"u": left[:, 0], **second}.items()}
        return {k: fix(p[k], v) for k, v in s.items()}

    return {**variables, "spectral": fix(params, spectral)}


def test_exported_weights_reproduce_flax_outputs():
    """The reverse direction end to end: an encoder with Flax-side values exported to the
    PyTorch mirror gives the same latents in eval mode."""
    cfg = funetgan_config()
    module = funetgan_build.build_encoder(cfg)
    template = _template(("funetgan", "encoder", ()))
    variables = converged_spectral_vectors(random_variables(template, seed=3))
    tm = funetgan_ref.build_network("encoder", cfg)
    tm.load_state_dict(flax_to_torch(variables, tm, funetgan_names.ENCODER), strict=True)
    tm.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        forward_diffs([(jit(functools.partial(module.apply, train=False))(variables, jnp.asarray(nhwc(x))), tm(x),
                        "latent")], "exported encoder")


# ----------------------------------------------------------------------------------------
# Checkpoints that do not fit


def import_error(state_dict, template, names, **kwargs):
    with pytest.raises(TorchImportError) as info:
        torch_to_flax(state_dict, template, names, **kwargs)
    return str(info.value)


def test_missing_keys_are_named_with_their_shapes():
    template, tm = PAIRS["encoder"]()
    sd = tm.state_dict()
    del sd["linear.weight_u"], sd["residual_conv_2.conv1.weight"], sd["residual_conv_2.conv1.u0"]
    message = import_error(sd, template, funetgan_names.ENCODER, source="enc.pth")
    assert ("enc.pth (BigGAN-style spectral norm (u0/sv0)) does not fit the encoder network "
            "(BigGAN-style spectral norm (u0/sv0))") in message
    assert "missing keys (3)" in message
    assert "linear.weight_u (expected shape (8,))" in message
    assert "residual_conv_2.conv1.weight (expected shape (16, 8, 3, 3))" in message
    assert "residual_conv_2.conv1.u0 (expected shape (1, 16))" in message
    assert "unexpected" not in message and "wrong shapes" not in message


def test_unexpected_keys_are_named():
    template, tm = PAIRS["conv_gon"]()
    sd = tm.state_dict()
    sd["network.99.weight"] = torch.zeros(3, 2)
    message = import_error(sd, template, gon_names.CONV_GON)
    assert "unexpected keys (1)" in message and "network.99.weight (3, 2)" in message
    assert "missing" not in message


def test_wrong_shapes_are_named():
    """A checkpoint of a wider configuration: every key present, shapes off."""
    template, _ = PAIRS["generator"]()
    _, wider = funetgan_pair("generator", width=8)
    message = import_error(wider.state_dict(), template, funetgan_names.GENERATOR)
    assert "wrong shapes" in message and "missing" not in message
    assert ("proj_o.1.weight: checkpoint (3, 8, 3, 3), expected (3, 4, 3, 3) "
            "(Flax params/out_conv/kernel (3, 3, 4, 3))") in message


def test_wrong_architecture_is_named():
    """A generator checkpoint loaded as a discriminator, and a residual discriminator loaded
    into the 'conv' variant (no shortcut convolutions, no CBAM)."""
    template, _ = PAIRS["discriminator"]()
    _, generator = PAIRS["generator"]()
    message = import_error(generator.state_dict(), template, funetgan_names.DISCRIMINATOR)
    assert "does not fit the discriminator network" in message
    assert "input_layer.conv1.weight (expected shape (4, 3, 3, 3))" in message
    assert "g_blocks.0.0.conv1.weight (16, 32, 3, 3)" in message
    assert "probably of another network or another configuration" in message

    conv_template, _ = PAIRS["discriminator_conv"]()
    _, residual = PAIRS["discriminator"]()
    message = import_error(residual.state_dict(), conv_template, funetgan_names.DISCRIMINATOR)
    assert "missing keys" not in message
    assert "residual_conv_1.conv_sc.weight" in message
    assert "input_layer.attention1.ChannelGate.mlp.1.weight" in message


def test_spectral_norm_format_mismatch_is_named():
    """A torch-spectral_norm checkpoint into a network configured for the original's BigGAN
    layers, and the reverse: both formats and the setting that selects them are named."""
    template, _ = PAIRS["discriminator"]()
    _, torch_sn = PAIRS["discriminator_torch_sn"]()
    message = import_error(torch_sn.state_dict(), template, funetgan_names.DISCRIMINATOR, source="D.pth")
    assert ("D.pth (torch spectral_norm (weight_orig/weight_u/weight_v)) does not fit the discriminator "
            "network (BigGAN-style spectral norm (u0/sv0))") in message
    assert "config.model.spectral_norm='torch'" in message
    assert "probably of another network" not in message
    torch_template, _ = PAIRS["discriminator_torch_sn"]()
    _, original = PAIRS["discriminator"]()
    message = import_error(original.state_dict(), torch_template, funetgan_names.DISCRIMINATOR, source="D.pth")
    assert "holds BigGAN-style spectral norm (u0/sv0); this discriminator is configured for torch" in message
    assert "config.model.spectral_norm='biggan'" in message
    plain = {k: v for k, v in original.state_dict().items() if not k.endswith(("u0", "sv0"))}
    assert "plain weights (no spectral-norm state)" in import_error(plain, template, funetgan_names.DISCRIMINATOR)


def test_generator_cbam_of_the_wrong_width_is_explained():
    """The original generator builds its third CBAM for base_channels after a 4 * base_channels
    block; a file saved from such a network names the layer and the fix."""
    template, tm = PAIRS["generator"]()
    sd = tm.state_dict()
    sd["g_blocks.1.1.ChannelGate.mlp.1.weight"] = torch.zeros(1, 4)  # built for 4 channels, not 8
    sd["g_blocks.1.1.ChannelGate.mlp.3.weight"] = torch.zeros(4, 1)
    sd["g_blocks.1.1.ChannelGate.mlp.3.bias"] = torch.zeros(4)
    message = import_error(sd, template, funetgan_names.GENERATOR)
    assert "g_blocks.1.1.ChannelGate.mlp.1.weight: checkpoint (1, 4), expected (1, 8)" in message
    assert "g_blocks.1.1 (CBAM after generator block(s) 1) has the width of another block" in message
    assert "CBAMBlock(4 * base_channels)" in message


@pytest.mark.parametrize("network", ["cae", "discriminator"])
def test_wrapped_checkpoints_are_opened(network):
    """{'state_dict': ...} with DataParallel's 'module.' prefix reads like the plain dict (the
    original f-UNetGAN saves G.module.state_dict(), without it; both load)."""
    template, tm = PAIRS[network]()
    sd = tm.state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    jax.tree.map(np.testing.assert_array_equal, torch_to_flax(wrapped, template, NAMES[network]),
                 torch_to_flax(sd, template, NAMES[network]))


def test_unrecognised_variables_and_wrong_network_are_named():
    """The name map is passed, not guessed from module names: one that does not fit the
    template names its network and what is unmatched, or the Flax module it looked for."""
    template, _ = PAIRS["cae"]()
    extra = {"mystery": {"kernel": jax.ShapeDtypeStruct((3,), jnp.float32)}}
    mystery = {**template, "params": {**template["params"], **extra}}
    with pytest.raises(TorchImportError, match=r"the cae mapping does not fit.*\n.*without a PyTorch counterpart "
                                               r"\(1\):\n\s+params/mystery/kernel"):
        torch_to_flax({}, mystery, gon_names.CAE)
    with pytest.raises(TorchImportError, match="expected a Flax variables dict with a 'params' collection"):
        torch_to_flax({}, {"mystery": {}}, gon_names.CAE)
    template, _ = PAIRS["encoder"]()
    with pytest.raises(TorchImportError, match="the Flax template has no parameters at proj_z"):
        torch_to_flax({}, template, funetgan_names.GENERATOR)
    from configs.quickstart import get_config

    with pytest.raises(ValueError, match=r"--network=resnet is not a network of config.method='funetgan': one of "
                                         r"\['generator', 'discriminator', 'encoder', 'all'\]"):
        convert_checkpoint.abstract_variables(get_config(), "resnet")


def test_export_into_a_mismatched_template_is_named():
    template, _ = PAIRS["encoder"]()
    _, wider = funetgan_pair("encoder", width=8, e_attention="cbam")
    with pytest.raises(TorchImportError, match=r"wrong shapes.*\n.*input_layer\.weight_orig: Flax gives \(4, 3, 3, 3\)"):
        flax_to_torch(random_variables(template), wider, funetgan_names.ENCODER)


# ----------------------------------------------------------------------------------------
# Files


class _Payload:
    """Unpickling this calls os.mkdir(path): code a checkpoint must never run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = str(tmp_path / "payload_ran")
    path = str(tmp_path / "evil.pth")
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path)
    with pytest.raises(TorchImportError) as info:
        load_torch_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load") and "mkdir" in message and "weights_only=True" in message
    assert not os.path.exists(marker)


def test_unreadable_missing_and_multi_network_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TorchImportError, match="garbage.pth: not a readable PyTorch checkpoint"):
        load_torch_checkpoint(str(garbage))
    with pytest.raises(FileNotFoundError, match="nothing.pth does not exist"):
        load_torch_checkpoint(str(tmp_path / "nothing.pth"))
    _, tm = PAIRS["cae"]()
    both = str(tmp_path / "both.pth")
    torch.save({"cae": tm.state_dict(), "step": 3}, both)
    with pytest.raises(TorchImportError, match=r"these entries are not tensors: cae \(OrderedDict\), step \(int\).*--pth_key"):
        load_torch_checkpoint(both)
    assert list(load_torch_checkpoint(both, key="cae")) == list(tm.state_dict())
    with pytest.raises(TorchImportError, match=r"has no entry 'gen' \(top-level keys: \['cae', 'step'\]\)"):
        load_torch_checkpoint(both, key="gen")


def test_convert_command(tmp_path):
    """The command once as users run it (subprocess, tiny quickstart encoder), then its
    functions in-process: --reverse export, a mismatched network, an existing output."""
    from configs.quickstart import get_config

    config = get_config()
    tm = funetgan_ref.build_network("encoder", config.model)
    randomise_statistics(tm, torch.Generator().manual_seed(2))
    pth, out = str(tmp_path / "encoder.pth"), str(tmp_path / "orbax")
    torch.save(tm.state_dict(), pth)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-m", "anomaly_core.interop.convert_checkpoint", "--config=configs/quickstart.py",
                          f"--pth={pth}", "--network=encoder", f"--out={out}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == f"wrote {out}"

    abstract = convert_checkpoint.abstract_variables(config, "encoder")
    restored = convert_checkpoint.restore_variables(out, abstract)
    jax.tree.map(np.testing.assert_array_equal, restored,
                 torch_to_flax(tm.state_dict(), abstract, funetgan_names.ENCODER))

    back = convert_checkpoint.export(config, "encoder", out, str(tmp_path / "back.pth"))
    exported = torch.load(back, weights_only=True)
    assert list(exported) == list(tm.state_dict())
    assert all(torch.equal(exported[k], v) for k, v in tm.state_dict().items())

    with pytest.raises(TorchImportError, match="does not fit the generator network"):
        convert_checkpoint.convert(config, "generator", pth, str(tmp_path / "wrong"))
    with pytest.raises(FileExistsError, match="already exists; choose a new folder or pass --force"):
        convert_checkpoint.convert(config, "encoder", pth, out)
    with pytest.raises(ValueError, match="--network=gon needs a gon config"):
        convert_checkpoint.convert(config, "gon", pth, str(tmp_path / "gon"))


def test_convert_command_round_trip_through_a_run_folder(tmp_path):
    """The quickstart's three networks in the original's format -> a launch.py run folder
    (subprocess, as users run it) -> exported back from that run: every tensor bit for bit."""
    from configs.quickstart import get_config

    config = get_config()
    files = []
    for name in ("generator", "discriminator", "encoder"):
        tm = funetgan_ref.build_network(name, config.model)
        randomise_statistics(tm, torch.Generator().manual_seed(3))
        files.append(str(tmp_path / f"{name}.pth"))
        torch.save({f"module.{k}": v for k, v in tm.state_dict().items()}, files[-1])  # DataParallel's prefix
    run_dir = str(tmp_path / "run")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-m", "anomaly_core.interop.convert_checkpoint", "--config=configs/quickstart.py",
                          f"--pth={','.join(files)}", "--network=all", f"--workdir={run_dir}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    total = config.train.generator_steps + config.train.encoder_steps
    assert run.stdout.strip() == f"wrote {os.path.join(run_dir, 'checkpoints', str(total))}"
    back = [str(tmp_path / f"back_{n}.pth") for n in ("G", "D", "E")]
    convert_checkpoint.export_run(config, "all", run_dir, back)
    for original, exported in zip(files, back):
        want, got = load_torch_checkpoint(original), torch.load(exported, weights_only=True)
        assert list(got) == list(want)
        # BatchNorm's num_batches_tracked has no Flax counterpart: exported as 0 (docs/PARITY.md).
        differ = [k for k, v in want.items() if not torch.equal(got[k], v)]
        assert all(k.endswith("num_batches_tracked") for k in differ), differ

    run = subprocess.run([sys.executable, "-m", "anomaly_core.interop.convert_checkpoint", "--config=configs/quickstart.py",
                          f"--pth={files[0]}", "--network=generator", f"--workdir={tmp_path / 'other'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "needs the whole f-UNetGAN: --network=all" in run.stderr


def test_convert_command_round_trip_through_a_gon_run_folder(tmp_path):
    """--network=all is the method's whole run, whatever the method: for GON its one model ->
    a run folder -> exported back from that run, every tensor bit for bit."""
    from configs.gon_quickstart import get_config

    config = get_config()
    tm = gon_ref.build_model(config.model)
    randomise_statistics(tm, torch.Generator().manual_seed(4))
    pth, run_dir, back = str(tmp_path / "gon.pth"), str(tmp_path / "run"), str(tmp_path / "back.pth")
    torch.save(tm.state_dict(), pth)
    total = config.train.steps
    assert convert_checkpoint.import_run(config, [pth], run_dir) == os.path.join(run_dir, "checkpoints", str(total))
    convert_checkpoint.export_run(config, "all", run_dir, [back])
    got = torch.load(back, weights_only=True)
    assert list(got) == list(tm.state_dict())
    differ = [k for k, v in tm.state_dict().items() if not torch.equal(got[k], v)]
    assert all(k.endswith("num_batches_tracked") for k in differ), differ
    with pytest.raises(ValueError, match="--network=all converts a whole GON into a run folder: pass --workdir"):
        convert_checkpoint.convert(config, "all", pth, str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"--network=all needs 1 --pth file\(s\) \(gon\), got 2"):
        convert_checkpoint.export_run(config, "all", run_dir, [back, back])


def test_convert_command_help():
    run = subprocess.run([sys.executable, "-m", "anomaly_core.interop.convert_checkpoint", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and not run.stderr, run.stderr  # absl's --help exits with status 1
    for text in ("--config", "--pth", "--network", "--out", "--workdir", "--reverse", "--torch_format", "--pth_key",
                 "weights_only=True"):
        assert text in run.stdout, text
