"""The evaluation results file: versioned JSON plus per-latent densities beside it.

The schema is documented in ``docs/evaluation.md``; bump `SCHEMA_VERSION` on any change that
removes or renames a key (adding keys keeps the version). Per-latent densities can run to
hundreds of thousands of numbers, so they go to ``<results stem>.latent_density.safetensors``
(tensor ``latent_density``, float32) and the JSON names that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from sparselens import __version__
from sparselens.io.atomic import atomic_write_bytes, atomic_write_json, read_json

SCHEMA = "sparselens.evaluation"
SCHEMA_VERSION = 1
DENSITY_SUFFIX = ".latent_density.safetensors"
DENSITY_KEY = "latent_density"


def results_record(checkpoint: dict[str, Any], data: dict[str, Any],
                   reconstruction: dict[str, Any] | None,
                   spliced: dict[str, Any] | None) -> dict[str, Any]:
    """Assemble the top-level record; a section that was not run is null."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "library_version": __version__,
            "checkpoint": checkpoint, "data": data, "reconstruction": reconstruction,
            "spliced": spliced}


def write_results(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write the JSON (and the density file, if the record has densities) atomically."""
    path = Path(path)
    record = dict(record)
    recon = record.get("reconstruction")
    if recon is not None and isinstance(recon.get(DENSITY_KEY), torch.Tensor):
        recon = dict(recon)
        density_path = path.with_name(path.stem + DENSITY_SUFFIX)
        tensor = recon.pop(DENSITY_KEY).detach().to("cpu", torch.float32).contiguous()
        atomic_write_bytes(density_path, save({DENSITY_KEY: tensor}))
        recon["latent_density_file"] = density_path.name
        record["reconstruction"] = recon
    atomic_write_json(path, record)
    return path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file, refusing other files and newer schema versions."""
    record = read_json(path, "evaluation results")
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a sparselens evaluation results file")
    if record.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"{path} uses evaluation schema {record['schema_version']}, newer than "
                         f"this sparselens ({SCHEMA_VERSION}); upgrade sparselens")
    return record


def read_latent_density(path: str | os.PathLike) -> torch.Tensor:
    """The per-latent densities that belong to results file `path`."""
    path = Path(path)
    name = (read_results(path).get("reconstruction") or {}).get("latent_density_file")
    if not name:
        raise FileNotFoundError(f"{path} has no latent densities (no reconstruction section)")
    density_file = path.with_name(name)
    if not density_file.exists():
        raise FileNotFoundError(f"{density_file} (named by {path}) does not exist")
    return load_file(density_file)[DENSITY_KEY]
