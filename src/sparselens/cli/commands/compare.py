"""``sparselens compare A B [--cache CACHE]``: which features two dictionaries share, which split,
which are new (docs/comparison.md). Writes ``OUT/compare.json`` and ``OUT/index.html``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparselens.cli.options import positional
from sparselens.comparison.compare import CompareOptions

NAME = "compare"
HELP = ("Compare two dictionaries (seeds, widths, hookpoints or models): optimal one-to-one "
        "matching by decoder cosine and, with a shared activation cache, by activation "
        "correlation (PW-MCC, histograms; --texts instead pairs two models' tokens "
        "by text spans when their tokenizers differ), SVCCA/CKA of the paired features, "
        "feature splitting, novel latents with their contexts. Writes JSON and a static page.")


@dataclass
class Config:
    a: str = positional("")
    """First dictionary folder (sparselens, SAELens, sparsify, Gemma Scope, dictionary_learning)."""
    b: str = positional("")
    """Second dictionary folder."""
    cache: str | None = None
    """Activation cache holding both dictionaries' hookpoints on the same tokens (one model at
    two hookpoints, or two models harvested with --second-model); enables activation matching,
    SVCCA/CKA and example contexts."""
    hookpoint_a: str | None = None
    """Cache hookpoint A reads; None: the one recorded in A (e.g. modelB/resid.6 for a second
    model)."""
    hookpoint_b: str | None = None
    """Cache hookpoint B reads; None: the one recorded in B."""
    tokenizer: str | None = None
    """Model folder or embedded name whose tokenizer shows contexts; None: the cache's model."""
    texts: str | None = None
    """Instead of a cache: a corpus (folder of .txt/.md, .jsonl, .parquet, or 'builtin') that
    both dictionaries' models read; their tokens are paired at shared character boundaries,
    so the two models may tokenize differently (docs/comparison.md)."""
    model_a: str | None = None
    """With --texts: model A (embedded name, folder, .gguf); None: the one A records."""
    model_b: str | None = None
    """With --texts: model B; None: the one B records."""
    max_documents: int | None = 400
    """With --texts: documents read at most."""
    max_tokens: int = 128
    """With --texts: tokens per document at most (per model)."""
    pool: str = "last"
    """With --texts: the activation standing for an aligned span, 'last' (the token ending it)
    or 'mean' (its tokens' mean)."""
    out: str = "compare"
    """Output folder (compare.json, index.html)."""
    options: CompareOptions = field(default_factory=CompareOptions)
    """Matching, splitting and novelty settings."""
    device: str = "cpu"
    """Device for the dictionaries."""


def run(cfg: Config) -> int:
    from pathlib import Path

    from sparselens.comparison.compare import compare_dictionaries
    from sparselens.comparison.compare_output import write_comparison
    from sparselens.comparison.explanations import load_explanations
    from sparselens.io.detect import load_any

    if not cfg.a or not cfg.b:
        raise ValueError("give two dictionaries: sparselens compare A B [--cache CACHE]")
    a, b = load_any(cfg.a, device=cfg.device), load_any(cfg.b, device=cfg.device)
    cache = tokens = tokenizer = shared = None
    if cfg.cache and cfg.texts:
        raise ValueError("give --cache or --texts, not both")
    if cfg.texts:
        shared = _aligned(cfg, a, b)
    if cfg.cache:
        from sparselens.data.cache import ActivationCache

        cache = ActivationCache.open(cfg.cache)
        tokens = cache.tokens()
        tokenizer = _tokenizer(cfg.tokenizer, cache)
    hookpoints = None
    if cfg.hookpoint_a or cfg.hookpoint_b:
        hookpoints = (cfg.hookpoint_a or a.cfg.hookpoint, cfg.hookpoint_b or b.cfg.hookpoint)
    result = compare_dictionaries(a, b, (cfg.a, cfg.b), cache, hookpoints, cfg.options,
                                  shared=shared, tokenizer=tokenizer)
    page = write_comparison(result, cfg.out, tokens, tokenizer, cfg.options.n_listed,
                            (load_explanations(cfg.a), load_explanations(cfg.b)))
    for label, m in (("decoder cosine", result.decoder),
                     ("activation correlation", result.activation)):
        if m is not None:
            print(f"{label}: PW-MCC {m.pwmcc:.4f} ({m.method} matching of {m.rows.size} pairs; "
                  f"bound {m.upper_bound:.4f}), {m.fraction_above(0.7):.1%} matched >= 0.7")
    if result.universality is not None:
        print(f"paired feature spaces: {result.universality.describe()}")
    if result.decoder_note:
        print(f"note: {result.decoder_note}")
    print(f"{len(result.novel['A'])} latents novel in A, {len(result.novel['B'])} in B, "
          f"{len(result.splits)} split; page {page}, data {Path(cfg.out) / 'compare.json'}")
    return 0


def _aligned(cfg: Config, a, b):
    """Both dictionaries' codes on the texts, tokens paired by character spans."""
    from sparselens.comparison.alignment import aligned_shared_codes
    from sparselens.comparison.datadiff_run import read_corpus
    from sparselens.lens import Lens
    from sparselens.models.source import load_model

    sources = (cfg.model_a or a.cfg.model, cfg.model_b or b.cfg.model)
    for side, source in zip("ab", sources):
        if not source:
            raise ValueError(f"dictionary {side.upper()} does not record its model; pass "
                             f"--model-{side}")
    lens_a = Lens(load_model(sources[0], device=cfg.device))
    lens_b = lens_a if sources[1] == sources[0] else Lens(load_model(sources[1],
                                                                     device=cfg.device))
    hookpoints = (cfg.hookpoint_a or a.cfg.hookpoint, cfg.hookpoint_b or b.cfg.hookpoint)
    texts = read_corpus(cfg.texts, max_documents=cfg.max_documents)
    shared, aligned = aligned_shared_codes(a, b, lens_a, lens_b, texts, hookpoints,
                                           cfg.options.n_tokens, cfg.max_tokens, cfg.pool)
    print(f"{aligned.n} aligned positions (coverage A {aligned.coverage()[0]:.1%}, "
          f"B {aligned.coverage()[1]:.1%})")
    return shared


def _tokenizer(name: str | None, cache) -> object | None:
    """The tokenizer that shows contexts, or None (contexts left out) if it cannot be found."""
    from sparselens.models.source import load_tokenizer

    source = name or cache.manifest.get("model")
    if not isinstance(source, str):
        return None
    try:
        return load_tokenizer(source)
    except (OSError, ValueError):
        print(f"note: no tokenizer found for {source!r}; contexts are left out (pass "
              "--tokenizer)")
        return None
