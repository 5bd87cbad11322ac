"""Config dataclasses become command-line options; each field's docstring becomes its --help.

Python drops attribute docstrings at run time, so they are read back from the source with
`ast`. Nested dataclass fields are flattened with a dotted prefix (``--train.lr``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields, for `cls` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None`` annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return tp, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def positional(default: Any) -> Any:
    """A dataclass field given as a positional argument on the command line (a list field
    takes any number of them)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default),
                                 metadata={"positional": True})
    return dataclasses.field(default=default, metadata={"positional": True})


def repeatable() -> Any:
    """A list field whose option may be given several times (``--x a --x b c`` -> [a, b, c])."""
    return dataclasses.field(default_factory=list, metadata={"repeatable": True})


def add_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one option per (possibly nested) dataclass field."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional = _base_type(hints[f.name])
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            add_options(parser, tp, prefix=f"{name}.")
            continue
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else None)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        help_text += " (required)" if required else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": name, "help": help_text, "default": argparse.SUPPRESS}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs.update(type=_parse_bool, metavar="BOOL", nargs="?", const=True)
        elif origin in (list, tuple):
            (inner, *_) = typing.get_args(tp) or (str,)
            kwargs.update(type=inner if inner in (int, float) else str, nargs="+")
            if f.metadata.get("repeatable"):
                kwargs["action"] = "extend"
        elif origin is typing.Literal:
            kwargs.update(choices=typing.get_args(tp))
        elif tp in (int, float, str):
            kwargs["type"] = tp
        else:
            kwargs["type"] = str
        if f.metadata.get("positional"):
            # Positional: optional on the command line, so the field default still applies.
            kwargs.pop("dest")
            many = "*" if origin in (list, tuple) else "?"
            parser.add_argument(name, nargs=many, **{k: v for k, v in kwargs.items()
                                                     if k not in ("nargs", "const")})
            continue
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def build_config(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate `cls` from flat dotted option values (only those the user gave)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            nested = {k: v for k, v in values.items() if k.startswith(name + ".")}
            if nested or f.default is dataclasses.MISSING:
                base = getattr(_default_of(f), "__dict__", {}) if nested else {}
                merged = {f"{name}.{k}": v for k, v in base.items()} | nested
                kwargs[f.name] = build_config(tp, merged, prefix=f"{name}.")
        elif name in values:
            value = values[name]
            if typing.get_origin(tp) is tuple and isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default
