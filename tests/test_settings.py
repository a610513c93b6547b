"""anomaly_core/settings.py and program.check_config: the one config validation."""
from __future__ import annotations

import glob
import importlib
import os
import re

import ml_collections
import pytest

from anomaly_core import settings
from anomaly_core.program import methods, program
from configs.gon_quickstart import get_config as gon_config
from configs.quickstart import get_config as funetgan_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**train):
    return ml_collections.ConfigDict({"train": train})


@pytest.mark.parametrize("rule, good, bad, message", [
    (settings.integer("config.train.x", 1), [1, 7], [0, -1, 1.5, True, "2"], "an integer >= 1"),
    (settings.integer("config.train.x", -1, 3), [-1, 3], [-2, 4], "an integer in [-1, 3]"),
    (settings.number("config.train.x", 0, 1, low_open=True), [1e-9, 0.5, 1, 1.0], [0, 0.0, 1.01, float("nan"), None],
     "a number in (0, 1]"),
    (settings.number("config.train.x", 0, 1, high_open=True), [0, 0.99], [1, -0.1], "a number in [0, 1)"),
    (settings.number("config.train.x", 0), [0, 3.5], [-1e-9, "1"], "a number >= 0"),
    (settings.choice("config.train.x", ("a", "b")), ["a", "b"], ["c", None, ["a"]], "one of ('a', 'b')"),
    (settings.boolean("config.train.x"), [True, False], [0, 1, "True"], "True or False"),
    (settings.numbers("config.train.x", 2, 0, 1, high_open=True), [(0, 0.5), (0.9, 0.999)],
     [(0.9,), (0.9, 1.0), ("a", 0.1), 5], "2 numbers, each in [0, 1)"),
])
def test_rules_accept_and_refuse_in_one_style(rule, good, bad, message):
    assert rule.allowed == message
    for value in good:
        settings.check(_config(x=value), [rule])
    for value in bad:
        with pytest.raises(settings.SettingError) as info:
            settings.check(_config(x=value), [rule])
        assert str(info.value) == f"config.train.x must be {message}, got {value!r}"


def test_missing_optional_and_nested_lookups():
    rule = settings.integer("config.train.x", 1)
    with pytest.raises(settings.SettingError, match=r"^config.train.x is missing$"):
        settings.check(_config(y=1), [rule])
    settings.check(_config(y=1), [settings.integer("config.train.x", 1, optional=True)])
    # A part of the config checked on its own (a network builder gets config.model only).
    model = ml_collections.ConfigDict({"width": 0})
    with pytest.raises(settings.SettingError, match=r"^config.model.width must be an integer >= 1, got 0$"):
        settings.check(model, [settings.integer("config.model.width", 1)], at="config.model")
    with pytest.raises(ValueError, match="not a setting under 'config.model'"):
        settings.check(model, [settings.integer("config.train.x", 1)], at="config.model")
    # The first rule broken is the one named.
    with pytest.raises(settings.SettingError, match="config.train.a"):
        settings.check(_config(a=0, b=0), [settings.integer("config.train.a", 1), settings.integer("config.train.b", 1)])


@pytest.mark.parametrize("make, setting, value, message", [
    (funetgan_config, "train.n_critic", 0, "config.train.n_critic must be an integer >= 1, got 0"),
    (funetgan_config, "train.g_ema_decay", 1.0, "config.train.g_ema_decay must be a number in [0, 1), got 1.0"),
    (funetgan_config, "model.d_block", "dense", "config.model.d_block must be one of ('residual', 'conv'), got 'dense'"),
    (funetgan_config, "model.image_size", 48,
     "config.model.image_size must be config.data.image_size (64), got 48"),
    (funetgan_config, "train.batch_size", 0, "config.train.batch_size must be an integer >= 1, got 0"),
    (funetgan_config, "data.channels", 2, "config.data.channels must be one of (1, 3), got 2"),
    (funetgan_config, "eval.aupro_fpr_limit", 0.0, "config.eval.aupro_fpr_limit must be a number in (0, 1], got 0.0"),
    (funetgan_config, "model.dtype", "float16",
     "config.model.dtype must be one of ('float32', 'bfloat16'), got 'float16'"),
    (gon_config, "train.steps", -1, "config.train.steps must be an integer >= 1, got -1"),
    (gon_config, "model.activation", "gelu", "config.model.activation must be one of"),
    (gon_config, "model.image_size", 32, "config.model.image_size must be config.data.image_size"),
])
def test_check_config_names_the_setting_value_and_what_is_allowed(make, setting, value, message):
    config = make()
    section, key = setting.split(".")
    with config.unlocked():
        config[section][key] = value
    with pytest.raises(settings.SettingError) as info:
        program.check_config(config, methods.for_config(config))
    assert str(info.value).startswith(message), str(info.value)


def _configs_and_presets():
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        if path.endswith(("__init__.py", "common.py", "_base.py")):
            continue
        name = os.path.relpath(path, ROOT)
        found = re.search(r"known: ([^)]*)\)", open(path).read())
        for preset in [""] + ([p.strip() for p in found.group(1).split(",")] if found else []):
            yield name, preset


@pytest.mark.parametrize("path, preset", list(_configs_and_presets()))
def test_every_shipped_config_passes_validation(path, preset):
    module = importlib.import_module(path[:-3].replace(os.sep, "."))
    config = module.get_config(preset) if preset else module.get_config()
    program.check_config(config, methods.for_config(config))
