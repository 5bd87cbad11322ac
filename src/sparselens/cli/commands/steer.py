"""``sparselens steer SAE --latent 123 --coef 8 --prompt "..."``: unedited and steered
generations side by side; ``--sweep`` measures concept strength against fluency over a range of
coefficients, the SAE latent against a dense mean-difference vector (docs/steering.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparselens.cli.options import positional

NAME = "steer"
HELP = ("Steer generation with a dictionary latent: print the unedited and the steered "
        "continuation side by side, or sweep the coefficient (--sweep) and write the concept "
        "strength / fluency curve against a dense steering vector as JSON and a plot.")


@dataclass
class Config:
    dictionary: str = positional("")
    """Dictionary folder (a sparselens training output, or a SAELens/sparsify/Gemma Scope one)."""
    model: str = "gemma-3-270m"
    """Embedded model name, local Hugging Face directory, or .gguf file."""
    latent: int | None = None
    """Latent to steer with; None: chosen from --concept-words (contrast, then output score)."""
    coef: float = 8.0
    """Steering coefficient: the latent's decoder row (unit norm) is added times this. Compare it
    with the activation norm at the site, printed with the result (about 3,300 at
    gemma-3-270m's resid.6, most of it in a few massive dimensions: strong latents saturate
    the next token near an eighth of it)."""
    prompt: str = "From my experience,"
    """Prompt to continue."""
    max_new_tokens: int = 40
    """Tokens to generate (greedy)."""
    concept_words: list[str] = field(default_factory=list)
    """Words naming the concept: choose the latent, build the dense baseline's contrast prompts
    and the concept description (default: the latent's logit-lens tokens)."""
    concept: str | None = None
    """Concept description the generations are scored against (MiniLM similarity)."""
    sweep: bool = False
    """Sweep --coefs for the latent and the dense baseline; writes sweep.json and sweep.png."""
    coefs: list[float] | None = None
    """Coefficients of the sweep (both steers share them: the dense vector is unit norm); None:
    0, 1/128, 1/64, 1/32, 1/16 and 1/8 of the median activation norm at the site."""
    sweep_prompts: list[str] = field(default_factory=list)
    """Prompts the sweep continues; default: five neutral prompts."""
    dense: bool = True
    """In a sweep, also steer with the mean-difference vector of the concept's contrast prompts."""
    out: str = "runs/steer"
    """Folder for sweep.json and sweep.png."""
    dtype: str = "float32"
    """Model dtype."""
    device: str = "cpu"
    """Device for the model and the dictionary."""


def run(cfg: Config) -> int:
    from sparselens.lens import Lens
    from sparselens.steering.pipeline import SteerSpec, run_side_by_side, run_sweep

    if not cfg.dictionary:
        raise ValueError('give the dictionary: sparselens steer SAE --latent N --prompt "..."')
    lens = Lens.load(cfg.model, [cfg.dictionary], dtype=cfg.dtype, device=cfg.device)
    spec = SteerSpec(lens.names[0], cfg.latent, cfg.concept_words, cfg.concept)
    if not cfg.sweep:
        print(run_side_by_side(lens, spec, cfg.coef, cfg.prompt, cfg.max_new_tokens).format())
        return 0
    result, paths = run_sweep(lens, spec, cfg.coefs, cfg.sweep_prompts or None,
                              cfg.max_new_tokens, cfg.out, dense=cfg.dense)
    for curve in result.curves:
        for p in curve.points:
            print(f"{curve.label:>16s} coef {p.coef:8g}  concept {p.concept_similarity:.3f}  "
                  f"perplexity {p.perplexity:9.2f}  repetition {p.repetition:.2f}")
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0
