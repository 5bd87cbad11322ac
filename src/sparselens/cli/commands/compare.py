"""``sparselens compare A B [--cache CACHE]``: which features two dictionaries share, which split,
which are new (docs/comparison.md). Writes ``OUT/compare.json`` and ``OUT/index.html``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparselens.cli.options import positional
from sparselens.comparison.compare import CompareOptions

NAME = "compare"
HELP = ("Compare two dictionaries (seeds, widths, hookpoints or models): optimal one-to-one "
        "matching by decoder cosine and, with a shared activation cache, by activation "
        "correlation (PW-MCC, histograms), SVCCA/CKA of the paired features, feature splitting, "
        "novel latents with their contexts. Writes JSON and a static page.")


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
    cache = tokens = tokenizer = None
    if cfg.cache:
        from sparselens.data.cache import ActivationCache

        cache = ActivationCache.open(cfg.cache)
        tokens = cache.tokens()
        tokenizer = _tokenizer(cfg.tokenizer, cache)
    hookpoints = None
    if cfg.hookpoint_a or cfg.hookpoint_b:
        hookpoints = (cfg.hookpoint_a or a.cfg.hookpoint, cfg.hookpoint_b or b.cfg.hookpoint)
    result = compare_dictionaries(a, b, (cfg.a, cfg.b), cache, hookpoints, cfg.options)
    page = write_comparison(result, cfg.out, tokens, tokenizer, cfg.options.n_listed,
                            (load_explanations(cfg.a), load_explanations(cfg.b)))
    for label, m in (("decoder cosine", result.decoder),
                     ("activation correlation", result.activation)):
        if m is not None:
            print(f"{label}: PW-MCC {m.pwmcc:.4f} ({m.method} matching of {m.rows.size} pairs; "
                  f"bound {m.upper_bound:.4f}), {m.fraction_above(0.7):.1%} matched >= 0.7")
    if result.decoder_note:
        print(f"note: {result.decoder_note}")
    print(f"{len(result.novel['A'])} latents novel in A, {len(result.novel['B'])} in B, "
          f"{len(result.splits)} split; page {page}, data {Path(cfg.out) / 'compare.json'}")
    return 0


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
