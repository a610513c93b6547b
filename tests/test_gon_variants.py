"""gon_jax/variants.py: one entry per config.model.kind is all a new GON variant needs.

A variant registered only in the registry (a module of its own, nothing else edited) builds,
trains one step through the gradient origin, scores, and is named by the kind check; and
no module of the package or the GON configs tests config.model.kind by value any more.
"""
import ast
import dataclasses
import glob
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from anomaly_core import settings
from gon_jax import build, origin, scoring, train, variants
from gon_jax.layers import ConvDecoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WideDecoder(ConvDecoder):
    """A stand-in for a new variant's module (its own class: the registry tells variants apart by class)."""


NEW = dataclasses.replace(
    variants.VARIANTS["conv_gon"], kind="wide_gon", network=WideDecoder,
    module=lambda m, dtype: WideDecoder(m.nz, variants.STAGE_LAYOUTS[m.preset](m.ngf, m.channels),
                                        activation=m.activation, out_activation=m.out_activation, dtype=dtype),
    defaults={"mnist": dict(nz=8, ngf=4, image_size=28, channels=1, activation="elu", out_activation="tanh")})


def test_the_registry_covers_every_kind_with_its_defaults_and_modules():
    assert variants.VARIANTS.keys() == {"conv_gon", "implicit_gon", "variational_gon", "cae"}
    for kind, v in variants.VARIANTS.items():
        assert v.kind == kind and v.torch_names.network == kind
        for preset in v.defaults:
            cfg = build.default_gon_model_config(kind, preset)
            assert type(build.build_gon_model(cfg)) is v.network
            assert variants.of_module(build.build_gon_model(cfg)) is v
    assert [k for k, v in variants.VARIANTS.items() if v.batch_norm] == ["conv_gon", "variational_gon"]
    assert [k for k, v in variants.VARIANTS.items() if not v.is_gon] == ["cae"]
    assert [k for k, v in variants.VARIANTS.items() if v.samples_latent] == ["variational_gon"]


def test_a_variant_registered_only_in_the_registry_builds_trains_and_scores(monkeypatch):
    with pytest.raises(ValueError, match="'wide_gon'/'mnist' has no defaults; known: conv_gon/mvtec"):
        build.default_gon_model_config("wide_gon", "mnist")
    monkeypatch.setitem(variants.VARIANTS, "wide_gon", NEW)
    cfg = build.default_gon_model_config("wide_gon", "mnist")
    model = build.build_gon_model(cfg)
    assert type(model) is WideDecoder and origin.default_loss_kind(model) == "mse_sum_channels"
    variables = build.init_variables(cfg, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    (loss, (stats, z, _)), grads = origin.gon_value_and_grad(variables, x, model=model, train=True)
    assert z.shape == (4, 8) and jnp.isfinite(loss) and stats is not None
    per_image, per_pixel, recon = scoring.reconstruction_errors(variables, x[:2], model=model, context=x[2:])
    assert per_image.shape == (2,) and per_pixel.shape == (2, 28, 28) and recon.shape == x[:2].shape
    config = ml_collections.ConfigDict({"model": cfg})
    assert train.has_context(config)  # BatchNorm: its state carries a scoring context


def test_an_unknown_kind_is_named_with_the_registered_ones():
    cfg = build.default_gon_model_config("cae", "mnist")
    cfg.kind = "gan"
    with pytest.raises(settings.SettingError, match=r"config.model.kind.*conv_gon.*implicit_gon.*variational_gon.*cae"):
        build.build_gon_model(cfg)


def _kind_comparisons(path: str) -> list[str]:
    """`<...>.kind == / != / in <literal>` comparisons in a source file (config.model.kind, m.kind;
    gon_jax/losses.py's loss `kind` argument is another setting)."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Compare):
            names = [n for n in [node.left, *node.comparators] if isinstance(n, ast.Attribute) and n.attr == "kind"]
            literals = [n for n in [node.left, *node.comparators] if isinstance(n, (ast.Constant, ast.Tuple))]
            if names and literals:
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    return found


def test_no_module_branches_on_the_kind(tmp_path):
    files = [*glob.glob(os.path.join(ROOT, "gon_jax", "*.py")), os.path.join(ROOT, "configs", "gon_base.py")]
    assert [f for path in files for f in _kind_comparisons(path)] == []
    # the check itself finds such a branch
    probe = tmp_path / "probe.py"
    probe.write_text("def f(config):\n    return config.model.kind in ('cae', 'implicit_gon')\n")
    assert [f.rsplit(":", 1)[1] for f in _kind_comparisons(str(probe))] == ["2"]
