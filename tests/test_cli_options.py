"""Config dataclasses become command-line options with their field docstrings as help."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

import pytest

from sparselens.cli.main import main, make_parser
from sparselens.cli.options import add_options, build_config, field_docs, positional


@dataclass
class Inner:
    lr: float = 1e-3
    """Learning rate."""


@dataclass
class Outer:
    name: str = positional("x")
    """The name."""
    steps: int = 10
    """How many steps."""
    flag: bool = False
    """Turn it on."""
    layers: list[int] = field(default_factory=lambda: [1, 2])
    """Which layers."""
    inner: Inner = field(default_factory=Inner)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_options(parser, Outer)
    return build_config(Outer, vars(parser.parse_args(argv)))


def test_docstrings_become_help():
    assert field_docs(Outer)["steps"] == "How many steps."
    parser = argparse.ArgumentParser()
    add_options(parser, Outer)
    text = parser.format_help()
    assert "How many steps." in text and "Learning rate." in text


def test_values_defaults_and_nesting():
    cfg = _parse(["y", "--steps", "3", "--flag", "--layers", "4", "5", "--inner.lr", "0.5"])
    assert (cfg.name, cfg.steps, cfg.flag, cfg.layers, cfg.inner.lr) == ("y", 3, True, [4, 5], 0.5)
    default = _parse([])
    assert (default.name, default.steps, default.flag, default.inner.lr) == ("x", 10, False, 1e-3)


def test_bad_value_is_an_argparse_error():
    with pytest.raises(SystemExit):
        _parse(["--steps", "many"])


def test_every_command_has_help_for_every_option():
    parser, commands = make_parser()
    assert "hookpoints" in commands
    for name, module in commands.items():
        assert not _undocumented(module.Config), f"{name}: fields without a docstring"


def _undocumented(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            missing += _undocumented(tp, f"{prefix}{f.name}.")
        elif f.name not in field_docs(cls):
            missing.append(prefix + f.name)
    return missing


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
