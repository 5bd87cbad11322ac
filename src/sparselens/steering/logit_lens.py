"""The logit lens of a direction in the residual stream: which tokens it promotes.

A decoder row is pushed through the model's final norm and its unembedding, as if it were the
last residual stream (Arad, Mueller and Belinkov 2025 do exactly this to name a latent's
"logit-lens tokens"). Decoder matrices times a 262k vocabulary do not fit in memory at once,
so rows are projected a block at a time and only the top-k survive.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ROWS_PER_BLOCK = 64
"""Directions projected to the vocabulary at a time (64 x 262k floats = 67 MB)."""


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied to the last residual stream before the unembedding, found by
    introspection: the last child of the decoder stack whose class or name says "norm"
    (``model.norm`` in Llama/Gemma, ``transformer.ln_f`` in GPT-2). None if there is none."""
    base = getattr(model, "base_model", model)
    for name, child in reversed(list(base.named_children())):
        if "norm" in type(child).__name__.lower() or name in ("ln_f", "norm", "final_layernorm"):
            return child
    return None


def unembedding(model: nn.Module) -> nn.Module:
    """The output projection (``lm_head``) of a causal LM."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head); the logit "
                         "lens needs a causal language model")
    return head


@torch.no_grad()
def logit_lens_logits(model: nn.Module, directions: Tensor) -> Tensor:
    """Vocabulary logits ``(n, vocab)`` of directions ``(n, d_model)`` (final norm, then the
    unembedding). For a few directions only: the result is vocabulary-wide."""
    head = unembedding(model)
    norm = final_norm(model)
    weight = head.weight
    x = directions.to(device=weight.device, dtype=weight.dtype)
    return head(norm(x) if norm is not None else x).float()


@torch.no_grad()
def logit_lens_top_tokens(model: nn.Module, directions: Tensor, k: int = 20) -> Tensor:
    """Token ids ``(n, k)`` each direction promotes most, best first."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    out = []
    for start in range(0, directions.shape[0], ROWS_PER_BLOCK):
        logits = logit_lens_logits(model, directions[start:start + ROWS_PER_BLOCK])
        out.append(logits.topk(min(k, logits.shape[-1]), dim=-1).indices.cpu())
    if not out:
        return torch.zeros(0, k, dtype=torch.long)
    return torch.cat(out)
