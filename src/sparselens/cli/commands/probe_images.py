"""``sparselens probe-images CACHE``: linear probe of an image cache's labels."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.cli.options import positional

NAME = "probe-images"
HELP = ("Linear-probe the labels of a labelled image cache (builtin:digits, builtin:glyphs, "
        "builtin:fonts) from mean patch activations, and from a dictionary's mean codes.")


@dataclass
class Config:
    cache: str = positional("")
    """An image cache written by `sparselens harvest-images` from a labelled set."""
    hookpoint: str | None = None
    """Hookpoint in the cache; None: its first."""
    dictionary: str | None = None
    """A dictionary folder trained on that hookpoint: also probe its mean codes."""
    l2: float = 1e-3
    """L2 penalty of the logistic regression (inputs standardised)."""
    out: str | None = None
    """Write the result as JSON here."""
    device: str = "cpu"
    """Device to encode on."""


def run(cfg: Config) -> int:
    import json
    from pathlib import Path

    from sparselens.evaluation.image_probing import run_image_probe

    if not cfg.cache:
        raise ValueError("give the image cache to probe: sparselens probe-images CACHE")
    result = run_image_probe(cfg.cache, cfg.hookpoint, cfg.dictionary, cfg.device, cfg.l2)
    counts = result["classes"]
    print(f"{result['source']} at {result['hookpoint']}: {len(counts['train'])} classes, "
          f"{sum(counts['train'])} training / {sum(counts['heldout'])} held-out images")
    for name in ("activations", "dictionary_codes"):
        if name in result:
            probe = result[name]
            print(f"  {name:17s} accuracy {probe['accuracy']:.3f}  "
                  f"(majority class {probe['majority_baseline']:.3f})")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
