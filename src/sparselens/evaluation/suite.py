"""The evaluation suite: every metric for one or more dictionaries, cached, as JSON records.

`run_suite` loads the model named by the activation cache once, attaches every dictionary
through the feature API, and runs the chosen metrics. Each metric result is cached under
``OUT/cache/`` keyed by the dictionary's weight checksum, the data's checksum and the metric's
settings, so a rerun (or a run interrupted half-way) recomputes only what is missing. A metric
that cannot run on the given data (a one-class task, too few examples) is recorded as
``{"skipped": reason}``; nothing is ever reported as a silent NaN (`check_bench_record`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparselens.data.cache import ActivationCache
from sparselens.dictionaries.base import Dictionary
from sparselens.evaluation.absorption import AbsorptionConfig
from sparselens.evaluation.results import SCHEMA
from sparselens.evaluation.tasks import BUILTIN_TASKS
from sparselens.io.atomic import atomic_write_json, read_json

SUITES = ("reconstruction", "geometry", "dark_matter", "probing", "tpp", "scr", "absorption",
          "consistency", "synthetic")
DEFAULT_SUITES = SUITES[:-1]
"""What ``--suite all`` runs: every suite but ``synthetic``, which trains a dictionary of the
architecture anew (minutes) and so is asked for by name."""
SECTIONS = ("geometry", "dark_matter", "sparse_probing", "tpp", "scr", "absorption",
            "consistency", "synthetic")


@dataclass
class SuiteConfig:
    """What the suite measures and on how much data."""

    suites: tuple[str, ...] = DEFAULT_SUITES
    tasks: tuple[str, ...] = tuple(BUILTIN_TASKS)
    task_files: tuple[str, ...] = ()
    max_per_class: int = 100
    max_length: int = 64
    heldout_tokens: int = 16384
    dense_threshold: float = 0.1
    absorption: AbsorptionConfig = field(default_factory=AbsorptionConfig)
    batch_size: int = 16
    synthetic_tokens: int = 1_000_000
    """Training tokens of the synthetic-recovery run (``synthetic`` suite)."""
    synthetic_latents: int = 512
    """Width of the synthetic-recovery dictionary (twice the 256 true features)."""
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.suites) - set(SUITES))
        if unknown:
            raise ValueError(f"unknown suite(s) {unknown}; choose from {list(SUITES)} or 'all' "
                             f"(= {list(DEFAULT_SUITES)})")


@dataclass
class Entry:
    """One dictionary under evaluation."""

    name: str
    path: Path
    dictionary: Dictionary
    checksum: str


def dictionary_checksum(dictionary: Dictionary) -> str:
    """sha256 over the architecture, config and every parameter's bytes."""
    digest = hashlib.sha256(dictionary.architecture.encode())
    digest.update(json.dumps(dictionary.cfg.to_dict(), sort_keys=True, default=str).encode())
    for key, tensor in sorted(dictionary.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_checksum(cache: ActivationCache) -> str:
    return hashlib.sha256(json.dumps(cache.manifest, sort_keys=True).encode()).hexdigest()


class MetricCache:
    """Finished metric results as JSON files named by a hash of everything they depend on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get_or_run(self, metric: str, key: dict[str, Any],
                   compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        path = self.folder / f"{metric}-{digest.hexdigest()[:24]}.json"
        if path.exists():
            return {**read_json(path, "cached metric"), "cached": True}
        start, cpu = time.perf_counter(), time.process_time()
        try:
            result = compute()
        except ValueError as error:  # the data cannot support this metric: say why
            result = {"skipped": str(error)}
        result["seconds"] = time.perf_counter() - start
        # CPU time of this process: on a shared machine, the honest measure of the work.
        result["cpu_seconds"] = time.process_time() - cpu
        result["loadavg"] = list(os.getloadavg())  # 1/5/15-min: how shared the machine was
        atomic_write_json(path, result)
        return {**result, "cached": False}


def check_model_and_site(entry: Entry, cache: ActivationCache) -> str:
    """The cache hookpoint the dictionary reads; a clear error if it belongs elsewhere."""
    cfg = entry.dictionary.cfg
    model = cache.manifest.get("model")
    if cfg.model and isinstance(model, str) and Path(cfg.model).name != Path(model).name:
        raise ValueError(f"{entry.path}: the dictionary was trained on model {cfg.model!r} but "
                         f"the cache holds activations of {model!r}; give a cache of its model")
    if cfg.hookpoint is None:
        raise ValueError(f"{entry.path}: the dictionary does not record its hookpoint")
    try:
        site = cache.resolve(cfg.hookpoint)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{entry.path}: the dictionary reads hookpoint {cfg.hookpoint!r}, which "
                         f"the cache does not hold ({cache.hookpoints}): {error}") from None
    if cache.width(site) != cfg.d_in:
        raise ValueError(f"{entry.path}: the dictionary expects width {cfg.d_in} but the cache's "
                         f"{site!r} is {cache.width(site)} wide: another model or hookpoint")
    return site


def load_entries(paths: Sequence[str | Path], device: str = "cpu") -> list[Entry]:
    from sparselens.io.detect import load_any

    entries: list[Entry] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dictionary {path} does not exist")
        dictionary = load_any(path, device=device)
        name = path.name if path.name not in {e.name for e in entries} else str(path)
        if name == "sae" and path.parent.name:  # `runs/x/sae`: name it after the run
            name = f"{path.parent.name}/sae"
        entries.append(Entry(name, path, dictionary, dictionary_checksum(dictionary)))
    return entries


def check_bench_record(record: dict[str, Any]) -> None:
    """Refuse records that break the schema or hide a NaN in a metric section."""
    if record.get("schema") != SCHEMA or not isinstance(record.get("schema_version"), int):
        raise ValueError("not a sparselens evaluation record")
    for key in ("checkpoint", "data", "bench", *SECTIONS):
        if key not in record:
            raise ValueError(f"evaluation record misses section {key!r}")
    for section in SECTIONS:
        value = record[section]
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"section {section!r} must be an object or null")
        bad = list(_nan_paths(value, section))
        if bad:
            raise ValueError(f"NaN in {bad}: a metric must be a number or skipped with a reason")


def _nan_paths(value: Any, path: str):
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nan_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nan_paths(item, f"{path}[{i}]")


def config_key(cfg: SuiteConfig) -> dict[str, Any]:
    data = dataclasses.asdict(cfg)
    data.pop("progress")
    data.pop("suites")
    return data
