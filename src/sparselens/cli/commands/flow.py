"""``sparselens flow``: follow latents through dictionaries at consecutive layers, data-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparselens.cli.options import positional

NAME = "flow"
HELP = ("Match latents between dictionaries at consecutive layers by decoder (or encoder) "
        "cosine and trace chosen latents through them; writes JSON.")


@dataclass
class Config:
    dictionaries: list[str] = positional([])
    """Dictionary folders in layer order (two or more)."""
    by: str = "decoder"
    """Compare decoder directions ('decoder') or the later encoder to the earlier decoder."""
    threshold: float = 0.5
    """Cosine below which a latent has no predecessor (it is born at that layer)."""
    follow: list[int] = field(default_factory=list)
    """Latents of the dictionary at --start to trace through the layers."""
    start: int = 0
    """Index (in the list) of the dictionary the followed latents belong to."""
    out: str = "flow.json"
    """Where the JSON goes."""


def run(cfg: Config) -> int:
    from sparselens.circuits.pipeline import feature_flow

    payload = feature_flow(cfg.dictionaries, by=cfg.by, threshold=cfg.threshold,  # type: ignore[arg-type]
                           follow=cfg.follow, start=cfg.start, out=cfg.out)
    for step in payload["steps"]:
        print(f"{step['from']} -> {step['to']}: {step['matched_fraction']:.1%} matched above "
              f"{cfg.threshold}, mean best cosine {step['mean_cosine']:.3f}")
    for path in payload["traces"]:
        print(" -> ".join(f"{p['latent']}@{p['dictionary']}" for p in path))
    print(f"-> {cfg.out}")
    return 0
