"""One served dictionary: its config, decoder, example store, index and explanations, read
lazily so that opening a 65,536-latent dictionary costs milliseconds and a feature page reads
a few rows.

What stays in memory is O(n_latents) scalars (firing counts and activation sums, about 16
bytes a latent, for the overview histogram and feature stats) and the explanations; the
weights, example slots and token rows stay in their memory-mapped safetensors files
(`safetensors.safe_open`) and are sliced per request. The full dictionary module is built
only when the model runs (the playgrounds), because encoding needs all its weights.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparselens.io.atomic import read_json
from sparselens.server import files
from sparselens.server.explanations import Explanations
from sparselens.server.index import ViewerIndex

NATIVE_WEIGHTS = "weights.safetensors"
NATIVE_CONFIG = "config.json"


@dataclass
class Example:
    """One stored firing: where it is and how strong."""

    seq: int
    position: int
    activation: float
    window: list[float] | None
    """The latent's activation on the tokens around it, when the store collected windows."""


class ExampleStore:
    """The per-latent slot tables of an ``examples.safetensors``, sliced on demand."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        self._file = safe_open(str(path), framework="pt")
        keys = set(self._file.keys())
        meta = self._file.metadata() or {}
        self.n_tokens = int(meta.get("n_tokens", 0))
        self.hookpoint = meta.get("hookpoint")
        window = json.loads(meta.get("window") or "null")
        self.window: tuple[int, int] | None = tuple(window) if window else None
        self.counts = self._file.get_tensor("counts").clone()
        self.sums = self._file.get_tensor("activation_sums").clone()
        self.has_windows = "top.windows" in keys
        self.n_top = int(self._file.get_slice("top.seq_ids").get_shape()[1])
        self.histogram_edges = self._histogram_edges(keys)
        self._max: Tensor | None = None

    def _histogram_edges(self, keys: set[str]) -> list[float] | None:
        """Edges of the store's per-latent |activation| histogram (stores that count one say
        so in ``examples.json`` beside them; one column below the first edge, one above the
        last)."""
        if "histogram" not in keys:
            return None
        description = files.inside(self.path.parent, "examples.json")
        try:
            edges = json.loads(description.read_text()).get("histogram_edges") \
                if description else None
        except (OSError, ValueError):
            return None
        columns = self._file.get_slice("histogram").get_shape()[1]
        return edges if isinstance(edges, list) and len(edges) + 1 == columns else None

    def max_activation(self) -> Tensor:
        """Each latent's strongest activation (the first top slot), read once."""
        if self._max is None:
            top = self._file.get_slice("top.activations")[:, 0:1][:, 0]
            valid = self._file.get_slice("top.seq_ids")[:, 0:1][:, 0] >= 0
            self._max = torch.where(valid, top, torch.zeros_like(top))
        return self._max

    def histogram(self, latent: int) -> list[int]:
        return self._file.get_slice("histogram")[latent:latent + 1][0].tolist()

    @property
    def n_latents(self) -> int:
        return int(self.counts.shape[0])

    def examples(self, part: str, latent: int) -> list[Example]:
        """Valid examples of `latent` in slot table `part` ("top" or "samples")."""
        row = slice(latent, latent + 1)
        seq = self._file.get_slice(f"{part}.seq_ids")[row][0]
        pos = self._file.get_slice(f"{part}.positions")[row][0]
        act = self._file.get_slice(f"{part}.activations")[row][0]
        windows = (self._file.get_slice(f"{part}.windows")[row][0] if self.has_windows
                   else None)
        valid = torch.nonzero(seq >= 0).squeeze(1).tolist()
        return [Example(int(seq[i]), int(pos[i]), float(act[i]),
                        windows[i].tolist() if windows is not None else None) for i in valid]


class DictionaryStore:
    """Everything the viewer knows about one served dictionary."""

    def __init__(self, name: str, folder: Path, examples: ExampleStore | None,
                 index: ViewerIndex | None) -> None:
        self.name = name
        self.folder = folder
        self.examples = examples
        self.index = index
        self._decoder_file: Any = None
        self._module: Any = None
        self._lock = threading.Lock()
        self.meta = self._read_meta()
        self.explanations = Explanations.read(files.explanation_files(folder))

    # ---- config and decoder ----

    def _read_meta(self) -> dict[str, Any]:
        config_path = files.inside(self.folder, NATIVE_CONFIG)
        weights = files.inside(self.folder, NATIVE_WEIGHTS)
        if config_path is not None and weights is not None:
            meta = read_json(config_path, "dictionary config")
            config = meta.get("config", {})
            return {"architecture": meta.get("architecture"), "config": config,
                    "native": True}
        module = self.module()
        return {"architecture": module.architecture, "config": module.cfg.to_dict(),
                "native": False}

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def n_latents(self) -> int:
        return int(self.config["n_latents"])

    @property
    def hookpoint(self) -> str | None:
        return self.config.get("hookpoint")

    def module(self) -> Any:
        """The full dictionary (nn.Module), loaded on first use: only the model needs it."""
        with self._lock:
            if self._module is None:
                from sparselens.io.detect import load_any

                self._module = load_any(self.folder).eval().requires_grad_(False)
            return self._module

    def decoder(self) -> Any:
        """``W_dec`` ``(n_latents, d_out)``: a lazy safetensors slice for native checkpoints
        (index it with row ranges), the module's tensor otherwise."""
        if self.meta["native"]:
            if self._decoder_file is None:
                from safetensors import safe_open

                path = files.inside(self.folder, NATIVE_WEIGHTS)
                self._decoder_file = safe_open(str(path), framework="pt")
            return self._decoder_file.get_slice("W_dec")
        return self.module().W_dec.detach()

    def decoder_shape(self) -> tuple[int, ...]:
        dec = self.decoder()
        return tuple(dec.get_shape()) if hasattr(dec, "get_shape") else tuple(dec.shape)

    def decoder_row(self, latent: int) -> Tensor:
        return self.decoder()[latent:latent + 1][0].float()

    # ---- metrics next to the dictionary ----

    def metrics(self) -> dict[str, Any]:
        """eval.json (and any benchmark JSON) from the dictionary folder."""
        found: dict[str, Any] = {}
        for name in (*files.EVAL_FILES, *files.BENCH_FILES):
            path = files.inside(self.folder, name)
            if path is not None:
                try:
                    found[name] = json.loads(path.read_text())
                except (OSError, ValueError):
                    found[name] = {"error": f"{name} is not valid JSON"}
        return found

    def train_log(self) -> Path | None:
        return files.inside(files.run_folder(self.folder), files.TRAIN_LOG)

    def describe(self) -> dict[str, Any]:
        """The short summary every page shows for a dictionary."""
        ex = self.examples
        return {"name": self.name, "architecture": self.meta["architecture"],
                "n_latents": self.n_latents, "hookpoint": self.hookpoint,
                "d_in": self.config.get("d_in"), "model": self.config.get("model"),
                "has_examples": ex is not None, "has_contexts": self.index is not None,
                "n_tokens": ex.n_tokens if ex else None,
                "n_explained": len(self.explanations)}


def open_store(name: str, folder: Path, examples_dir: Path | None = None,
               build_index_from: Any = None) -> DictionaryStore:
    """Open the dictionary in `folder`. `build_index_from` is a callable ``(examples_file) ->
    ViewerIndex | None`` used when no current index exists (the caller knows the cache)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a dictionary folder")
    examples_file = files.find_example_store(folder, examples_dir)
    examples = ExampleStore(examples_file) if examples_file is not None else None
    index = None
    if examples_file is not None:
        index = ViewerIndex.open_if_current(examples_file)
        if index is None and build_index_from is not None:
            index = build_index_from(examples_file)
    store = DictionaryStore(name, folder, examples, index)
    if examples is not None and examples.n_latents != store.n_latents:
        raise ValueError(f"the example store {examples_file} describes {examples.n_latents} "
                         f"latents but {folder} has {store.n_latents}; collect the examples "
                         "with this dictionary (sparselens report)")
    return store
