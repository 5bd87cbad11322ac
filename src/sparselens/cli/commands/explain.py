"""``sparselens explain DICTIONARY --latents 0:500``: explain latents with a language model and
score the explanations (detection, fuzzing, embedding, intruder), next to the dictionary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sparselens.cli.options import positional

NAME = "explain"
HELP = ("Explain latents with a language model (local by default, or any OpenAI-compatible "
        "server) and score each explanation on held-out contexts against a random and an "
        "empty explanation; resumable, results in DICTIONARY/explanations.")


@dataclass
class Config:
    checkpoint: str = positional("")
    """Dictionary folder (a training output folder or one of its checkpoints)."""
    latents: str = "0:100"
    """Latents to explain: ranges and ids, e.g. 0:500 or 3,7,42."""
    llm: str = "local"
    """'local' (the packaged Qwen2.5-Coder served by llama.cpp on 127.0.0.1), 'transformers'
    (the same model in this process, slower), a .gguf file, or the http(s) URL of an
    OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)."""
    model: str | None = None
    """Model name on the server (URL), or which packaged explainer to use locally:
    qwen2.5-coder-1.5b-instruct (default) or qwen2.5-coder-0.5b-instruct."""
    api_key: str | None = None
    """API key for a server; None: SPARSELENS_LLM_API_KEY or OPENAI_API_KEY."""
    concurrency: int = 4
    """Requests in flight at once against a server URL (the local server takes one)."""
    timeout: float = 300.0
    """Seconds to wait for one answer before retrying."""
    retries: int = 4
    """Retries of a failed request (with exponential backoff) before it is recorded as an
    error; the next run retries it again."""
    scorers: str = "detection,fuzzing,embedding"
    """Comma-separated scorers: detection, fuzzing, embedding, intruder."""
    n_examples: int = 10
    """Top-activating train contexts shown to the explainer."""
    n_contrast: int = 0
    """Quiet train contexts shown to the explainer as contrast."""
    chain_of_thought: bool = False
    """Let the explainer reason before answering."""
    answer_tokens: int = 32
    """Token budget of the explainer's answer (at least 96 for the delphi style, 400 with
    chain of thought)."""
    style: str = "short"
    """Explainer prompt: short (few-shot, a noun phrase; for small models) or delphi."""
    token_hint: bool = True
    """Short prompt: list the marked tokens when one token has half the marks, with a worked
    answer naming such a token (names single-token features; see docs/explain.md)."""
    slots: int = 1
    """Requests the local llama.cpp server decodes together (2 keeps the explainer's and the
    judge's prompt caches apart)."""
    n_test: int = 8
    """Activating and quiet held-out contexts per latent for the scorers (each)."""
    cache: str | None = None
    """Activation cache to collect the example store from (first run only); None: the
    'cache' folder beside a `sparselens run` output."""
    max_tokens: int = 500_000
    """Tokens of the cache the example store reads."""
    tokenizer: str | None = None
    """Tokenizer for the contexts; None: the model named in the cache manifest."""
    out: str | None = None
    """Output folder; None: DICTIONARY/explanations."""
    seed: int = 0
    """Seed for the baselines' random explanation choice."""


def run(cfg: Config) -> int:
    from sparselens.interpretation.contexts import ContextReader
    from sparselens.interpretation.explain import ExplainConfig, explain_latents, parse_latents
    from sparselens.interpretation.explain_setup import (
        OUTPUT_FOLDER,
        default_cache,
        open_llm,
        store_tokenizer,
    )
    from sparselens.interpretation.explainer import ExplainerConfig
    from sparselens.interpretation.store import load_or_collect
    from sparselens.io.native import load_dictionary

    if not cfg.checkpoint:
        raise ValueError("give the dictionary: sparselens explain DICTIONARY --latents 0:100")
    checkpoint = Path(cfg.checkpoint)
    dictionary = load_dictionary(checkpoint)
    latents = parse_latents(cfg.latents, dictionary.cfg.n_latents)
    cache = Path(cfg.cache) if cfg.cache else default_cache(checkpoint)
    examples = load_or_collect(checkpoint, dictionary, cache, max_tokens=cfg.max_tokens)
    reader = ContextReader(examples, store_tokenizer(checkpoint, cache, cfg.tokenizer))
    options = ExplainConfig(latents=latents,
                            scorers=tuple(s.strip() for s in cfg.scorers.split(",") if s.strip()),
                            explainer=ExplainerConfig(n_examples=cfg.n_examples,
                                                      n_contrast=cfg.n_contrast,
                                                      chain_of_thought=cfg.chain_of_thought,
                                                      max_tokens=cfg.answer_tokens,
                                                      style=cfg.style,
                                                      token_hint=cfg.token_hint),
                            n_test=cfg.n_test, seed=cfg.seed)
    out = Path(cfg.out) if cfg.out else checkpoint / OUTPUT_FOLDER
    with open_llm(cfg.llm, model=cfg.model, api_key=cfg.api_key, concurrency=cfg.concurrency,
                  timeout=cfg.timeout, retries=cfg.retries, log_dir=out,
                  slots=cfg.slots) as llm:
        result = explain_latents(examples, reader, llm, options, out)
    print(format_summary(result.summary, out))
    return 0


def format_summary(summary: dict, out: Path) -> str:
    lines = [f"{summary['latents']} latents: " + ", ".join(
        f"{n} {status}" for status, n in sorted(summary["status"].items()))]
    for name, part in summary["scorers"].items():
        if "margin_over_random" in part:
            m = part["margin_over_random"]
            score = part["explanation"]
            if score["mean"] is None:
                lines.append(f"  {name}: no scores")
                continue
            interval = (f"[{m['low']:+.3f}, {m['high']:+.3f}]" if m["mean"] is not None
                        else "(no baseline)")
            lines.append(f"  {name}: {score['mean']:.3f}; over a random explanation "
                         f"{m['mean'] if m['mean'] is not None else float('nan'):+.3f} "
                         f"95% CI {interval}")
        elif part["score"]["mean"] is not None:
            lines.append(f"  {name}: {part['score']['mean']:.3f} (chance {part['chance']:.2f})")
    cache = summary["llm_cache"]
    lines.append(f"  model answers: {cache['misses']} new, {cache['hits']} from the cache; "
                 f"results in {out}")
    return "\n".join(lines)
