"""``sparselens datadiff SAE --a CORPUS --b CORPUS``: what differs between two corpora, in a
dictionary's latents (docs/comparison.md). Writes ``OUT/datadiff.json`` and ``OUT/index.html``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparselens.cli.options import positional
from sparselens.comparison.datadiff_run import DatadiffOptions

NAME = "datadiff"
HELP = ("Compare two corpora through a dictionary: each document embedded as its pooled latent "
        "activations, latents significantly more frequent in one corpus (Fisher exact, "
        "Benjamini-Hochberg), document clusters, retrieved documents per latent, latents named "
        "by their explanations when present. Writes JSON and a static page.")


@dataclass
class Config:
    sae: str = positional("")
    """Dictionary folder (any format load_any reads); an explanations.jsonl beside it names
    latents."""
    a: str = ""
    """Corpus A: a folder of .txt/.md files, a .jsonl or .parquet file, or 'builtin'."""
    b: str = ""
    """Corpus B, same forms."""
    model: str | None = None
    """Model the dictionary reads (embedded name, local folder, .gguf); None: the one recorded
    in the dictionary, else the one of the activation cache beside it (sparselens run's
    layout)."""
    field: str = "text"
    """JSONL key or Parquet column holding the text."""
    max_documents: int | None = None
    """Documents read per corpus; unset reads them all."""
    out: str = "datadiff"
    """Output folder (datadiff.json, index.html)."""
    options: DatadiffOptions = dataclasses.field(default_factory=DatadiffOptions)
    """Embedding, testing and clustering settings."""
    model_dtype: str = "float32"
    """Dtype to run the model in."""
    device: str = "cpu"
    """Device for the model and the dictionary."""
    progress: bool = True
    """Show progress bars."""


def run(cfg: Config) -> int:
    from sparselens.comparison.datadiff_run import read_corpus, run_datadiff, write_datadiff
    from sparselens.comparison.explanations import load_explanations
    from sparselens.comparison.model_source import infer_model
    from sparselens.io.detect import load_any
    from sparselens.lens import Lens
    from sparselens.models.source import load_model

    if not cfg.sae or not cfg.a or not cfg.b:
        raise ValueError("give a dictionary and two corpora: sparselens datadiff SAE --a CORPUS "
                         "--b CORPUS")
    dictionary = load_any(cfg.sae, device=cfg.device)
    model = cfg.model
    if not model:
        model, where = infer_model(cfg.sae, dictionary)
        print(f"model {model} (from {where})")
    texts_a = read_corpus(cfg.a, cfg.field, cfg.max_documents)
    texts_b = read_corpus(cfg.b, cfg.field, cfg.max_documents)
    lens = Lens(load_model(model, dtype=cfg.model_dtype, device=cfg.device), {"sae": dictionary})
    result = run_datadiff(lens, "sae", texts_a, texts_b, cfg.options,
                          load_explanations(cfg.sae), (cfg.a, cfg.b), cfg.progress)
    page = write_datadiff(result, cfg.out, cfg.options)
    for direction, label in (("a", cfg.a), ("b", cfg.b)):
        found = result.diff.significant(direction)
        listed = ", ".join(str(d.latent) for d in found[:5])
        print(f"{len(found)} latents significantly more frequent in {label}"
              + (f" (top: {listed})" if found else ""))
    print(f"page {page}")
    return 0
