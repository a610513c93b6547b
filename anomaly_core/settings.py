"""Config validation: each setting's constraint declared once, checked by one function.

A `Rule` names a setting by its dotted name (`config.train.batch_size`), says what is
allowed, and tests a value. The shared program declares the rules of the settings every
method has (`config.data`, `config.train`, `config.eval`, ...); each method package declares
its own (`method.Method.settings`). `check` raises `SettingError` for the first setting at
fault, always in one style:

  config.train.n_critic must be an integer >= 1, got 0
  config.model.z_dim is missing
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class SettingError(ValueError):
    """A setting with a value that is not allowed (or missing); the message names it."""


def error(name: str, value: Any, allowed: str) -> SettingError:
    """The one message style: '<dotted name> must be <allowed>, got <value!r>'."""
    return SettingError(f"{name} must be {allowed}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One setting's constraint. `test(value)` is True when allowed; `allowed` completes
    'must be ...'. An `optional` setting may be absent (its documented default applies)."""

    name: str
    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _interval(noun: str, low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    """'a number in (0, 1]', 'an integer >= 1', ... (a None bound is open-ended)."""
    if low is not None and high is not None:
        return f"{noun} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{noun} {'>' if low_open else '>='} {low}"
    return noun if high is None else f"{noun} {'<' if high_open else '<='} {high}"


def integer(name: str, low: int | None = None, high: int | None = None, *, optional: bool = False) -> Rule:
    """An int in [low, high] (either bound may be None)."""
    return Rule(name, _interval("an integer", low, high),
                lambda v: _is_int(v) and (low is None or v >= low) and (high is None or v <= high), optional)


def number(name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, optional: bool = False) -> Rule:
    """An int or float in the interval from low to high (closed unless *_open; None: unbounded)."""
    def ok(v: Any) -> bool:
        if not _is_number(v) or v != v:  # NaN compares false with everything
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return high is None or (v < high if high_open else v <= high)

    return Rule(name, _interval("a number", low, high, low_open, high_open), ok, optional)


def numbers(name: str, count: int, low: float, high: float, *, high_open: bool = False) -> Rule:
    """A sequence of `count` numbers, each in [low, high] (or [low, high) with high_open),
    e.g. Adam's betas."""
    def ok(v: Any) -> bool:
        return len(v) == count and all(_is_number(x) and low <= x and (x < high if high_open else x <= high)
                                       for x in v)

    return Rule(name, f"{count} numbers, each {_interval('', low, high, high_open=high_open).strip()}", ok)


def choice(name: str, choices: Sequence[Any], *, optional: bool = False) -> Rule:
    """One of `choices`."""
    choices = tuple(choices)
    return Rule(name, f"one of {choices}", lambda v: _hashable(v) and v in choices, optional)


def boolean(name: str, *, optional: bool = False) -> Rule:
    return Rule(name, "True or False", lambda v: isinstance(v, bool), optional)


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


MISSING = object()  # lookup's answer for an absent setting


def lookup(node: Any, name: str, at: str = "config") -> Any:
    """The value of dotted `name` below `node` (which is the setting named `at`), or MISSING."""
    if not name.startswith(at + "."):
        raise ValueError(f"rule {name!r} is not a setting under {at!r}")
    for part in name[len(at) + 1:].split("."):
        if not hasattr(node, "keys") or part not in node:
            return MISSING
        node = node[part]
    return node


def check(node: Any, rules: Iterable[Rule], at: str = "config") -> None:
    """Raises SettingError for the first rule `node` (the config, or the part of it named
    `at`, e.g. 'config.model') breaks."""
    for rule in rules:
        value = lookup(node, rule.name, at)
        if value is MISSING:
            if rule.optional:
                continue
            raise SettingError(f"{rule.name} is missing")
        try:
            ok = rule.test(value)
        except (TypeError, ValueError):  # e.g. a string where a number was expected
            ok = False
        if not ok:
            raise error(rule.name, value, rule.allowed)
