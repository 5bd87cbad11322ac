"""What the model loses when its activation is replaced by the dictionary's reconstruction.

Four forward passes per batch of held-out sequences, differing only at the hookpoint:

- ``clean``: untouched;
- ``spliced``: the activation replaced by the dictionary's output;
- ``spliced_with_error``: replaced by output + (activation − output), i.e. the original up to
  float error: a check that splicing itself is faithful (its CE must equal the clean CE);
- ``zero_ablation``: replaced by zeros.

Replacement happens only at non-special positions (BOS, EOS, pad keep their activations: they
are outliers the dictionary was not trained on). Averages run over next-token predictions
made at a non-special position whose target token is not special either.
``loss_recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)``; KL is KL(clean ‖ spliced),
mean per prediction. For a transcoder the input is read at ``hookpoint`` and the output
replaced at its target hookpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sparselens.dictionaries.base import Dictionary
from sparselens.lens import Lens, ZeroAblate
from sparselens.models.source import LoadedModel

MODES = ("clean", "spliced", "spliced_with_error", "zero_ablation")
ROWS_PER_CHUNK = 64
"""Rows of logits turned into log-probabilities at a time (vocabularies reach 262k)."""
NAME = "dictionary"


@dataclass
class SequenceBatch:
    """Token ids ``(B, L)`` and where they are special ``(B, L)``."""

    ids: Tensor
    special: Tensor


@torch.no_grad()
def spliced_metrics(dictionary: Dictionary, loaded_model: LoadedModel, hookpoint: str | None,
                    token_chunks: Iterable[Any], *, target_hookpoint: str | None = None,
                    batch_size: int = 2) -> dict[str, Any]:
    """CE of the clean, spliced, spliced-with-error and zero-ablated model, KL and loss recovered.

    `token_chunks` yields chunks with ``.ids`` and ``.special`` (`sparselens.data.chunking.Chunk`)
    or plain id tensors ``(L,)``/``(B, L)``, whose special positions are then found from the
    tokenizer. Pass held-out sequences only. `hookpoint` (and a transcoder's
    `target_hookpoint`) default to the names recorded in the dictionary's config. The splices
    are the feature API's (`Lens.forward`), which leaves special tokens alone.
    """
    lens = Lens(loaded_model)
    attached = lens.attach(NAME, dictionary, hookpoint, target_hookpoint)
    sums = dict.fromkeys([f"ce_{m}" for m in MODES] + [f"kl_{m}" for m in MODES[1:]], 0.0)
    counts = dict.fromkeys(["n_sequences", "n_predictions", "n_spliced_positions"], 0)
    with dictionary.evaluating():
        for batch in _batches(token_chunks, loaded_model.tokenizer, batch_size):
            ids = batch.ids.to(loaded_model.device)
            keep = (~batch.special).to(ids.device)
            predictions = Predictions.of(ids, keep)
            if predictions.labels.numel() == 0:
                continue
            for key, value in _batch_sums(lens, str(attached.write), ids, predictions).items():
                sums[key] += value
            counts["n_sequences"] += ids.shape[0]
            counts["n_predictions"] += predictions.labels.shape[0]
            counts["n_spliced_positions"] += int(keep.sum())
    if counts["n_predictions"] == 0:
        raise ValueError("no next-token predictions to evaluate: pass held-out sequences of at "
                         "least two non-special tokens")
    result: dict[str, Any] = {k: v / counts["n_predictions"] for k, v in sums.items()}
    result["loss_recovered"] = loss_recovered(result["ce_clean"], result["ce_spliced"],
                                              result["ce_zero_ablation"])
    return result | counts


@dataclass
class Predictions:
    """The next-token predictions that count: logits row ``(batch[i], position[i])`` should
    predict ``labels[i]``."""

    batch: Tensor
    position: Tensor
    labels: Tensor

    @classmethod
    def of(cls, ids: Tensor, keep: Tensor) -> Predictions:
        batch, position = (keep[:, :-1] & keep[:, 1:]).nonzero(as_tuple=True)
        return cls(batch, position, ids[batch, position + 1])

    def chunks(self, logits: Tensor) -> Iterator[tuple[slice, Tensor]]:
        """float32 log-probabilities of the counted rows, a few rows at a time (a vocabulary of
        262k makes a full ``(tokens, vocab)`` copy expensive)."""
        for start in range(0, self.labels.shape[0], ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            chunk = logits[self.batch[rows], self.position[rows]].float()
            yield rows, torch.log_softmax(chunk, dim=-1)


def _batch_sums(lens: Lens, write_site: str, ids: Tensor,
                predictions: Predictions) -> dict[str, float]:
    """Summed CE of every mode and summed KL to the clean model, for one batch."""
    logits = lens.forward(ids).logits
    clean = torch.cat([lp for _, lp in predictions.chunks(logits)])
    del logits
    sums = {"ce_clean": _nll(clean, predictions.labels)}
    runs = {"spliced": {"splice": [NAME]},
            "spliced_with_error": {"splice": [NAME], "keep_error": True},
            "zero_ablation": {"edits": [ZeroAblate(write_site)]}}
    for mode, options in runs.items():
        logits = lens.forward(ids, **options).logits
        sums[f"ce_{mode}"] = sums[f"kl_{mode}"] = 0.0
        for rows, log_probs in predictions.chunks(logits):
            sums[f"ce_{mode}"] += _nll(log_probs, predictions.labels[rows])
            reference = clean[rows]
            sums[f"kl_{mode}"] += float((reference.exp() * (reference - log_probs))
                                        .sum(dtype=torch.float64))
        del logits
    return sums


def _nll(log_probs: Tensor, labels: Tensor) -> float:
    return float(-log_probs.gather(1, labels[:, None]).sum(dtype=torch.float64))


def loss_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """(CE_ablated − CE_spliced) / (CE_ablated − CE_clean): 1 when splicing costs nothing, 0 when
    it is as bad as zero-ablation; NaN when ablation does not hurt (the ratio is undefined)."""
    denominator = ce_ablated - ce_clean
    return (ce_ablated - ce_spliced) / denominator if denominator != 0 else float("nan")


def _batches(chunks: Iterable[Any], tokenizer: Any, batch_size: int) -> Iterator[SequenceBatch]:
    """Group sequences of equal length into batches of up to `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    special_ids = _special_ids(tokenizer)
    pending: list[tuple[Tensor, Tensor]] = []
    for item in chunks:
        for ids, special in _sequences(item, special_ids):
            if pending and (len(pending) == batch_size or pending[0][0].shape != ids.shape):
                yield _stack(pending)
                pending = []
            pending.append((ids, special))
    if pending:
        yield _stack(pending)


def _sequences(item: Any, special_ids: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    ids = item.ids if hasattr(item, "ids") else torch.as_tensor(item)
    special = item.special if hasattr(item, "special") else torch.isin(ids, special_ids)
    if ids.ndim == 1:
        yield ids.long(), special.bool()
    elif ids.ndim == 2:
        yield from zip(ids.long(), special.bool())
    else:
        raise ValueError(f"token ids must be (L,) or (B, L), got shape {tuple(ids.shape)}")


def _special_ids(tokenizer: Any) -> Tensor:
    if tokenizer is None:
        return torch.empty(0, dtype=torch.long)
    from sparselens.data.chunking import special_token_ids

    return torch.tensor(special_token_ids(tokenizer), dtype=torch.long)


def _stack(pending: list[tuple[Tensor, Tensor]]) -> SequenceBatch:
    return SequenceBatch(ids=torch.stack([p[0] for p in pending]),
                         special=torch.stack([p[1] for p in pending]))
