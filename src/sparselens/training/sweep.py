"""Sweeps: several training configs that differ in a few options, trained from one stream.

A sweep is the base config plus a grid: ``n_latents=4096,16384`` and ``k=16,32`` give four
members, every combination. Alternatively (or in addition) a JSON or YAML file lists the
members explicitly as objects of options, e.g. ``[{"architecture": "topk", "k": 32},
{"architecture": "jumprelu"}]``; the grid then applies to each of them. Keys are the options of
`sparselens train` (``n_latents``, ``optim.lr``, ``dictionary.k``); a key that is not a training
option is a field of the dictionary variant (``k`` means ``dictionary.k``).

Each member is named after its own option values (``k=16,n_latents=4096``), which is also its
output folder. The options that define the stream itself (batch size, seed, device) cannot
vary within a sweep: each value would need its own pass over the data.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.training.config import TrainConfig

STREAM_OPTIONS = ("batch_size", "seed", "device")
"""Options every member of a sweep shares: they decide which batches are read, in what order,
and where they go."""


@dataclass(frozen=True)
class SweepMember:
    """One dictionary of a sweep: its name (and output subfolder), options and full config."""

    name: str
    overrides: dict[str, Any]
    config: TrainConfig


def expand_sweep(base: TrainConfig, entries: Sequence[str]) -> list[SweepMember]:
    """The members of a sweep: the product of every ``KEY=V1,V2,...`` entry and every file's
    list of option objects, each applied on top of `base`."""
    choices = [_entry_choices(entry) for entry in entries]
    members = []
    for combination in itertools.product(*choices):
        overrides: dict[str, Any] = {}
        for part in combination:
            clash = sorted(set(overrides) & set(part))
            if clash:
                raise ValueError(f"sweep: {clash} set by two sweep entries; give each option once")
            overrides |= part
        config = apply_overrides(base, overrides)
        members.append(SweepMember(member_name(overrides), overrides, config))
    names = [m.name for m in members]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"sweep: several members would be named {duplicates}; every member "
                         "needs different option values")
    return members


def _entry_choices(entry: str) -> list[dict[str, Any]]:
    """``KEY=V1,V2`` -> [{KEY: V1}, {KEY: V2}]; a .json/.yaml file -> its list of objects."""
    text = entry.strip()
    if Path(text).suffix.lower() in (".json", ".yaml", ".yml"):
        return _file_choices(Path(text))
    key, sep, values = text.partition("=")
    key = _canonical_key(key)
    if not sep or not key or not values.strip():
        raise ValueError(f"sweep: expected KEY=V1,V2,... or a .json/.yaml file, got {entry!r}")
    return [{key: _parse_value(value)} for value in values.split(",")]


def _file_choices(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"sweep file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"sweep file {path} is not valid JSON: {err}") from None
    else:
        import yaml

        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"sweep file {path} is not valid YAML: {err}") from None
    if not (isinstance(items, list) and items and all(isinstance(i, dict) for i in items)):
        raise ValueError(f"sweep file {path} must hold a non-empty list of objects of options, "
                         'e.g. [{"n_latents": 4096}, {"n_latents": 16384, "k": 64}]')
    return [{_canonical_key(k): v for k, v in item.items()} for item in items]


def _canonical_key(key: str) -> str:
    return key.strip().lstrip("-").replace("-", "_")


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text in ("None", "none"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """`base` with `overrides` (dotted keys) applied, validated as a whole new config."""
    data = base.to_dict()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head in STREAM_OPTIONS:
            raise ValueError(f"sweep: {head} cannot vary within a sweep (all members read one "
                             f"stream of batches); run one sweep per {head}")
        if head == "dictionary" and rest:
            data["dictionary"][rest] = value
        elif head in fields and rest:
            if not isinstance(data[head], dict) or rest not in data[head]:
                raise ValueError(f"sweep: unknown option {key!r}")
            data[head][rest] = value
        elif head in fields:
            data[head] = value
        elif not rest:
            data["dictionary"][head] = value  # a field of the dictionary variant, e.g. k
        else:
            raise ValueError(f"sweep: unknown option {key!r}")
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sweep member {member_name(overrides)}: {err}") from None


def member_name(overrides: dict[str, Any]) -> str:
    """``key=value,key=value`` in key order: readable, and stable across runs (for resume)."""
    if not overrides:
        return "base"
    return ",".join(f"{key}={_format(value)}" for key, value in sorted(overrides.items()))


def _format(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text.replace("/", "_").replace(" ", "")
