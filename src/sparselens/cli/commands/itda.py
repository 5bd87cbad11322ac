"""``sparselens itda --model-a M --hookpoints-a resid.6 [--model-b M2 --hookpoints-b ...]``:
ITDA dictionaries (no training) at several sites of one or two models over the same text, and
the Jaccard similarity of every pair against chance (docs/comparison.md). Writes JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparselens.comparison.itda_run import ITDAOptions

NAME = "itda"
HELP = ("Model and layer similarity without training: an ITDA dictionary (Leask et al.) per "
        "(model, hookpoint) over the same text, aligned by character spans when the "
        "tokenizers differ, and the Jaccard similarity of their atoms with a random baseline.")


@dataclass
class Config:
    model_a: str = "gemma-3-270m"
    """Model A (embedded name, local folder, .gguf file)."""
    hookpoints_a: tuple[str, ...] = ("resid.6",)
    """Hookpoints of model A to build ITDA dictionaries at."""
    model_b: str | None = None
    """Model B; None: only model A's hookpoints are compared with each other."""
    hookpoints_b: tuple[str, ...] = ()
    """Hookpoints of model B."""
    texts: str = "builtin"
    """Corpus: a folder of .txt/.md files, a .jsonl or .parquet file, or 'builtin'."""
    field: str = "text"
    """JSONL key or Parquet column holding the text."""
    max_documents: int | None = 400
    """Documents read from the corpus at most."""
    n_tokens: int = 4096
    """Aligned positions to build every dictionary from."""
    max_tokens: int = 128
    """Tokens per document at most (per model)."""
    pool: str = "last"
    """Activation standing for an aligned span: 'last' (the token ending it) or 'mean'."""
    options: ITDAOptions = dataclasses.field(default_factory=ITDAOptions)
    """ITDA and baseline settings."""
    out: str = "itda.json"
    """Output JSON file."""
    model_dtype: str = "float32"
    """Dtype the models run in (float32, bfloat16, or auto: bf16 only where it is native)."""
    device: str = "cpu"
    """Device for the models (cpu, cuda, ...)."""


def run(cfg: Config) -> int:
    from sparselens.comparison.datadiff_run import read_corpus
    from sparselens.comparison.itda_run import run_itda
    from sparselens.io.atomic import atomic_write_json
    from sparselens.lens import Lens
    from sparselens.models.source import load_model

    if cfg.model_b is not None and not cfg.hookpoints_b:
        raise ValueError("--model-b needs --hookpoints-b (the sites of model B to compare)")
    if cfg.model_b is None and len(cfg.hookpoints_a) < 2:
        raise ValueError("with one model give at least two --hookpoints-a to compare, or a "
                         "--model-b with --hookpoints-b")
    texts = read_corpus(cfg.texts, cfg.field, cfg.max_documents)
    lens_a = Lens(load_model(cfg.model_a, dtype=cfg.model_dtype, device=cfg.device))
    lens_b = lens_a if cfg.model_b is None else Lens(
        load_model(cfg.model_b, dtype=cfg.model_dtype, device=cfg.device))
    result, aligned = run_itda(lens_a, cfg.hookpoints_a, lens_b, cfg.hookpoints_b, texts,
                               cfg.n_tokens, cfg.max_tokens, cfg.pool, cfg.options)
    record = result.record() | {"models": {"A": cfg.model_a, "B": cfg.model_b or cfg.model_a},
                                "coverage": list(aligned.coverage()), "pool": cfg.pool}
    atomic_write_json(cfg.out, record)
    print(f"{aligned.n} aligned positions (coverage A {aligned.coverage()[0]:.1%}, "
          f"B {aligned.coverage()[1]:.1%})")
    for name in result.names:
        print(f"{name}: {record['atoms'][name]} atoms in {result.seconds[name]:.1f} s")
    for pair in record["pairs"]:
        print(f"{pair['a']} vs {pair['b']}: Jaccard {pair['jaccard']:.4f} (random "
              f"{pair['random_mean']:.4f} ± {pair['random_std']:.4f})")
    print(f"data {cfg.out}")
    return 0
