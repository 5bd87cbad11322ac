"""Open the served dictionaries (building their viewer indexes when needed) and run uvicorn.

The CLI's ``sparselens serve`` is `open_stores` + `build_app` + `run_server`; each is usable
on its own from Python.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparselens.interpretation.image_examples import IMAGES_META
from sparselens.interpretation.image_report import PatchTokenizer
from sparselens.server import files
from sparselens.server.app import LOOPBACK_HOSTS, create_app
from sparselens.server.comparisons import ServedComparison
from sparselens.server.graphs import ServedGraph
from sparselens.server.index import ViewerIndex, build_index, tokenizer_for
from sparselens.server.limits import Limits
from sparselens.server.runner import ModelRunner
from sparselens.server.store import DictionaryStore, open_store


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Folder names; where two collide, the parent folder joins the name (run_a-sae), so a
    name is one URL path segment."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}-{n}" if names.count(n) > 1 else n
            for p, n in zip(paths, names)]


def _stored_tokens(examples_file: Path) -> Any:
    """The token table an example store carries itself (stores may embed it), or None."""
    from safetensors import safe_open

    with safe_open(str(examples_file), framework="pt") as handle:
        return handle.get_tensor("tokens") if "tokens" in handle.keys() else None  # noqa: SIM118


def _index_builder(folder: Path, cache: Path | None, tokenizer: Any, model_name: str | None):
    """A callable building the viewer index for an example store from its own token table,
    or else from the activation cache's."""

    def build(examples_file: Path) -> ViewerIndex | None:
        from sparselens.data.cache import ActivationCache

        tokens = _stored_tokens(examples_file)
        source = cache or files.find_cache(folder)
        patches = (examples_file.parent / IMAGES_META).is_file()  # an image cache's store
        tok = PatchTokenizer() if patches and tokenizer is None else tokenizer
        if tokens is None and source is None:
            warnings.warn(f"{examples_file} has no viewer index yet and no activation cache was "
                          "found to build it from; examples show without text. Pass --cache",
                          stacklevel=2)
            return None
        opened = ActivationCache.open(source, allow_incomplete=True) if source else None
        name = model_name or (opened.manifest.get("model") if opened else None)
        if tok is None and not isinstance(name, str):
            warnings.warn(f"no tokenizer to turn {examples_file}'s tokens into text; pass "
                          "--model or --tokenizer", stacklevel=2)
            return None
        tok = tok or tokenizer_for(str(name))
        print(f"building the viewer index for {examples_file} (once)", flush=True)
        table = tokens if tokens is not None else opened.tokens()  # type: ignore[union-attr]
        return ViewerIndex(build_index(examples_file, table, tok))

    return build


def open_stores(paths: Sequence[str | Path], *, cache: str | Path | None = None,
                examples: Sequence[str | Path] | None = None, tokenizer: Any = None,
                model_name: str | None = None) -> list[DictionaryStore]:
    """Open each dictionary folder with its example store and viewer index."""
    folders = [Path(p).expanduser() for p in paths]
    if not folders:
        raise ValueError("give at least one dictionary folder to serve")
    if examples is not None and len(examples) != len(folders):
        raise ValueError(f"--examples needs one folder per dictionary ({len(folders)}), got "
                         f"{len(examples)}")
    stores = []
    for i, (name, folder) in enumerate(zip(_unique_names(folders), folders)):
        given = Path(examples[i]).expanduser() if examples is not None else None
        builder = _index_builder(folder, Path(cache) if cache else None, tokenizer, model_name)
        store = open_store(name, folder, given, builder)
        found = store.examples.path if store.examples else "none (run `sparselens report`)"
        print(f"{name}: {folder} · examples {found}", flush=True)
        stores.append(store)
    return stores


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_app(stores: Sequence[DictionaryStore], model: Any = None, host: str = "127.0.0.1",
              limits: Limits | None = None, graphs: Sequence[ServedGraph] = (),
              comparisons: Sequence[ServedComparison] = ()) -> Any:
    """The app for `stores`, with `model` (a LoadedModel) behind the playgrounds if given and
    `graphs` (from `load_graphs`) on the graph page. Off loopback every Host header is
    accepted (the user chose to expose it)."""
    runner = ModelRunner(model, stores) if model is not None else None
    hosts = LOOPBACK_HOSTS if is_loopback(host) else ["*"]
    return create_app(stores, runner, limits, allowed_hosts=hosts, graphs=graphs,
                      comparisons=comparisons)


def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    if not is_loopback(host):
        warnings.warn(f"serving on {host}: anyone who can reach this address can read the "
                      "served dictionaries and run the model; there is no authentication",
                      stacklevel=2)
    shown = f"[{host}]" if ":" in host else host
    print(f"sparselens viewer on http://{shown}:{port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
