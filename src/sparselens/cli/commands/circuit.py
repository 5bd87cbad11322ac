"""``sparselens circuit``: an attribution graph through transcoders for one prompt."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

NAME = "circuit"
HELP = ("Attribution graph of a target token's logit through per-layer transcoders (frozen "
        "attention and norms), pruned by influence, checked by ablation; writes JSON.")


@dataclass
class Config:
    prompt: str = ""
    """The prompt whose next-token prediction is explained."""
    target: str = ""
    """The predicted token (a single token, usually with its leading space, e.g. ' Paris')."""
    transcoders: list[str] = field(default_factory=list)
    """One transcoder folder per layer (mlp_in.L -> mlp_out.L), any format load_any reads."""
    model: str = "gemma-3-270m"
    """Embedded model name, local Hugging Face directory, or .gguf file."""
    contrast: str | None = None
    """Explain logit(target) - logit(contrast) instead of logit(target)."""
    max_latents: int = 256
    """Latents whose incoming edges are computed (chosen greedily by influence)."""
    batch_size: int = 8
    """Targets per backward pass (copies of the prompt in one batch)."""
    node_threshold: float = 0.8
    """Keep the nodes holding this fraction of the influence."""
    edge_threshold: float = 0.98
    """Keep the edges holding this fraction of the edge influence."""
    validate: int = 10
    """Ablate this many top latents in the real model, predicted vs measured (0: skip)."""
    out: str = "circuit.json"
    """Where the graph JSON goes."""
    device: str = "cpu"
    """Torch device."""


def run(cfg: Config) -> int:
    from sparselens.circuits.pipeline import trace_circuit
    from sparselens.lens import Lens

    if not cfg.prompt or not cfg.target or not cfg.transcoders:
        raise SystemExit("sparselens circuit needs --prompt, --target and --transcoders (one "
                         "per layer)")
    lens = Lens.load(cfg.model, cfg.transcoders, device=cfg.device)
    result = trace_circuit(lens, cfg.prompt, cfg.target, contrast=cfg.contrast,
                           max_latents=cfg.max_latents, batch_size=cfg.batch_size,
                           node_threshold=cfg.node_threshold, edge_threshold=cfg.edge_threshold,
                           validate_top=cfg.validate, out=cfg.out)
    print(json.dumps(result.summary(), indent=2))
    print(f"graph -> {cfg.out}")
    return 0
