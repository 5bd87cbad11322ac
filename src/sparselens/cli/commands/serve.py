"""``sparselens serve SAE [SAE ...] [--model NAME]``: the feature viewer in a browser."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.cli.options import positional

NAME = "serve"
HELP = ("Serve a feature viewer for one or more dictionaries on this machine: overview, "
        "feature pages with examples and logit lens, search, attribution graphs (--graphs), "
        "and (with --model) text and steering playgrounds. Binds 127.0.0.1 unless --host says "
        "otherwise.")


@dataclass
class Config:
    dictionaries: tuple[str, ...] = positional(())
    """Dictionary folders to serve (native, or any format `convert` reads)."""
    model: str | None = None
    """Model for the playgrounds and the logit lens (embedded name or local folder); None:
    no model (pages from the stored examples only). 'auto': the model the first dictionary
    names in its config, else the one its activation cache was harvested from."""
    cache: str | None = None
    """Activation cache the example stores were collected from, to build the viewer index on
    first use; None: the run's cache/ folder next to the dictionary, if there is one."""
    examples: tuple[str, ...] | None = None
    """Folders holding each dictionary's examples.safetensors (one per dictionary); None:
    look in the dictionary folder, its report/ and the run's report/."""
    tokenizer: str | None = None
    """Tokenizer (embedded model name or local folder) that turns the cache's token ids into
    text when the viewer index is built; None: the --model's, else the cache's model."""
    graphs: tuple[str, ...] | None = None
    """Attribution graph files written by `sparselens circuit --out` to show on the graph
    page (only these files are served; each is checked at startup)."""
    compare: tuple[str, ...] | None = None
    """Comparison records written by `sparselens compare --out` (compare.json or its folder)
    to show on the compare page, linked to the served dictionaries they name."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but a loopback address exposes the viewer (and the model)
    to the network without authentication; a warning says so."""
    port: int = 8000
    """TCP port."""
    dtype: str = "float32"
    """Dtype the model runs in."""
    device: str = "cpu"
    """Device for the model and dictionaries."""


def run(cfg: Config) -> int:
    from sparselens.server.comparisons import load_comparisons
    from sparselens.server.graphs import load_graphs
    from sparselens.server.launch import build_app, open_stores, run_server

    if not cfg.dictionaries:
        raise ValueError("give the dictionary folders to serve: sparselens serve SAE [SAE ...]")
    if not 0 < cfg.port < 65536:
        raise ValueError(f"--port must be from 1 to 65535, got {cfg.port}")
    graphs = load_graphs(cfg.graphs or ())  # before the slow part: a bad file fails at once
    for graph in graphs:
        print(f"graph {graph.name}: {graph.path} · {len(graph.data['nodes'])} nodes", flush=True)
    comparisons = load_comparisons(cfg.compare or ())
    for comparison in comparisons:
        print(f"comparison {comparison.name}: {comparison.path}", flush=True)
    model = None
    if cfg.model is not None:
        from sparselens.models.source import load_model

        name = cfg.model if cfg.model != "auto" else _model_of(cfg.dictionaries[0], cfg.cache)
        print(f"loading {name} ...")
        model = load_model(name, dtype=cfg.dtype, device=cfg.device)
    tokenizer = model.tokenizer if model is not None else None
    if cfg.tokenizer is not None:
        from sparselens.server.index import tokenizer_for

        tokenizer = tokenizer_for(cfg.tokenizer)
    stores = open_stores(cfg.dictionaries, cache=cfg.cache, examples=cfg.examples,
                         tokenizer=tokenizer, model_name=model.name if model else None)
    run_server(build_app(stores, model, host=cfg.host, graphs=graphs,
                         comparisons=comparisons), host=cfg.host,
               port=cfg.port)
    return 0


def _model_of(dictionary: str, cache: str | None) -> str:
    """The model a dictionary was trained on: its config's, else its cache manifest's."""
    from pathlib import Path

    from sparselens.data.cache import ActivationCache
    from sparselens.io.detect import load_any
    from sparselens.server.files import find_cache

    name = load_any(dictionary).cfg.model
    source = Path(cache) if cache else find_cache(Path(dictionary))
    if not name and source is not None:
        name = ActivationCache.open(source, allow_incomplete=True).manifest.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError(f"neither {dictionary} nor its activation cache names the model; "
                         "pass --model NAME")
    return name
