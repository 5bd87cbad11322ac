"""Comparison records (`sparselens compare --out`) served beside the dictionaries.

As with graphs, only files named at startup are served, each under a name (its parent folder's
name, since every record is called compare.json): the URL picks a name from that table and
never becomes a path. Each file is read and checked once at startup, so a foreign JSON stops
the server with a message. The record's two dictionaries are tied to served dictionaries when
one is served from the same folder (or, failing that, a folder of the same name), so the page
links matched, split and novel latents to their feature pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparselens.server.files import read_checked_json

SCHEMA = "sparselens.compare"
HOW_TO_WRITE = "write one with `sparselens compare A B --out FOLDER` (FOLDER/compare.json)"


@dataclass(frozen=True)
class ServedComparison:
    name: str
    path: Path
    data: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        data = self.data
        measures = {key: (data.get(key) or {}).get("pwmcc")
                    for key in ("decoder_matching", "activation_matching")}
        return {"name": self.name, "dictionaries": data["dictionaries"],
                "n_latents": data.get("n_latents"), "pwmcc": measures}

    def payload(self, stores: Sequence[Any]) -> dict[str, Any]:
        """The record plus the served dictionary each side links to (None: not served)."""
        return {**self.data, "served": {side: served_name(self.data["dictionaries"][side],
                                                          stores) for side in ("A", "B")}}


def served_name(folder: str, stores: Sequence[Any]) -> str | None:
    """The served dictionary read from `folder`: the same folder, else the same folder name."""
    wanted = Path(folder).expanduser()
    for store in stores:
        try:
            if Path(store.folder).resolve() == wanted.resolve():
                return store.name
        except OSError:
            continue
    same_name = [s.name for s in stores if Path(s.folder).name == wanted.name]
    return same_name[0] if len(same_name) == 1 else None


def check_comparison(data: Any) -> str | None:
    """What is wrong with a parsed compare.json, or None."""
    if not isinstance(data, dict):
        return "it is not a JSON object"
    if data.get("schema") != SCHEMA:
        return f"its 'schema' is {data.get('schema')!r}, expected {SCHEMA!r}"
    sides = data.get("dictionaries")
    if not isinstance(sides, dict) or not all(isinstance(sides.get(s), str) for s in "AB"):
        return "'dictionaries' does not name A and B"
    for key in ("decoder_matching", "activation_matching"):
        value = data.get(key)
        if value is not None and (not isinstance(value, dict) or "histogram" not in value):
            return f"{key!r} is not a matching summary"
    if not isinstance(data.get("novel", {}), dict):
        return "'novel' is not an object"
    return None


def load_comparisons(paths: Sequence[str | Path]) -> list[ServedComparison]:
    """The comparison records to serve: each a compare.json or a folder holding one."""
    out: list[ServedComparison] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            path = path / "compare.json"
        data = read_checked_json(path, "comparison", "a compare record", check_comparison,
                                 HOW_TO_WRITE)
        name = path.resolve().parent.name if path.name == "compare.json" else path.stem
        if any(c.name == name for c in out):
            raise ValueError(f"two comparison files would share the name {name!r}; put them "
                             "in differently named folders")
        out.append(ServedComparison(name, path, data))
    return out
