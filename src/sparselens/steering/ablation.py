"""Ablation studies: knock a set of latents out over a corpus and see what the model loses.

Each batch of texts runs twice: unedited, and with `AblateLatents` (the latents' codes set to
zero or to their mean, decoded, the error term kept, so the activation changes only by those
latents' contribution). The next-token loss is compared over every prediction, and over the
predictions made at tokens where at least one of the latents fired (the only places a zero
ablation changes anything). Predictions from or to a special token (BOS, padding) do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from sparselens.steering.checks import SteeringInputError, check_latents
from sparselens.steering.lens_access import truncated_tokens


@dataclass
class LossChange:
    n_predictions: int
    loss_clean: float
    loss_ablated: float

    @property
    def delta(self) -> float:
        return self.loss_ablated - self.loss_clean


@dataclass
class AblationResult:
    dictionary: str
    latents: list[int]
    mode: str
    overall: LossChange
    where_fired: LossChange

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overall"]["delta"] = self.overall.delta
        out["where_fired"]["delta"] = self.where_fired.delta
        return out


def _token_losses(logits: Tensor, ids: Tensor) -> Tensor:
    """CE of predicting ``ids[:, t+1]`` from position t: ``(B, L-1)``."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(logits.device), reduction="none")


@torch.no_grad()
def latent_means(lens: Any, name: str, texts: Sequence[str], latents: Sequence[int], *,
                 batch_size: int = 4, max_length: int | None = 128) -> Tensor:
    """Mean code ``(n_latents,)`` over the ordinary tokens of `texts`, filled in for `latents`
    only (zero elsewhere): what mean ablation of those latents needs, one batch at a time."""
    total, count = torch.zeros(len(latents), dtype=torch.float64), 0
    index = torch.tensor(list(latents))
    for start in range(0, len(texts), batch_size):
        toks = truncated_tokens(lens, texts[start:start + batch_size], max_length)
        codes = lens.encode(toks).codes[name].dense().float().cpu()[..., index]
        valid = (toks.attention_mask.bool() & ~toks.special.bool()).cpu()
        total += codes[valid.cpu()].sum(0).double()
        count += int(valid.sum())
    means = torch.zeros(lens.dictionaries[name].cfg.n_latents)
    means[index] = (total / max(count, 1)).float()
    return means


@torch.no_grad()
def ablation_study(lens: Any, name: str, latents: Sequence[int], texts: Sequence[str], *,
                   mode: Literal["zero", "mean"] = "zero", batch_size: int = 4,
                   max_length: int | None = 128) -> AblationResult:
    """Loss with and without `latents` of dictionary `name` over `texts`."""
    from sparselens.lens import AblateLatents

    latents = [int(j) for j in latents]
    check_latents(lens, name, latents)
    if not latents or not texts:
        raise SteeringInputError("give at least one latent and one text to ablate over")
    if mode not in ("zero", "mean"):
        raise SteeringInputError(f"mode must be 'zero' or 'mean', got {mode!r}")
    means = latent_means(lens, name, texts, latents, batch_size=batch_size,
                         max_length=max_length) if mode == "mean" else None
    edit = AblateLatents(name, latents=latents, mode=mode, means=means)
    sums = torch.zeros(2, 2, dtype=torch.float64)   # [overall, fired] x [clean, ablated]
    counts = [0, 0]
    index = torch.tensor(latents)
    for start in range(0, len(texts), batch_size):
        toks = truncated_tokens(lens, texts[start:start + batch_size], max_length)
        ids = toks.ids
        ok = (toks.attention_mask.bool() & ~toks.special.bool()).cpu()
        counted = (ok[:, :-1] & ok[:, 1:])
        codes = lens.encode(toks).codes[name].dense().cpu()[..., index]
        fired = counted & (codes[:, :-1] != 0).any(-1)
        clean = _token_losses(lens.forward(toks).logits, ids).cpu().double()
        ablated = _token_losses(lens.forward(toks, edits=[edit]).logits, ids).cpu().double()
        for row, mask in enumerate((counted, fired)):
            sums[row, 0] += clean[mask].sum()
            sums[row, 1] += ablated[mask].sum()
            counts[row] += int(mask.sum())
    if counts[0] == 0:
        raise SteeringInputError("the texts hold no next-token predictions; give longer texts")

    def change(row: int) -> LossChange:
        n = counts[row]
        if n == 0:
            return LossChange(0, float("nan"), float("nan"))
        return LossChange(n, float(sums[row, 0] / n), float(sums[row, 1] / n))

    return AblationResult(name, latents, mode, change(0), change(1))
