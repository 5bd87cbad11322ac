"""Evaluation of dictionaries over stacked sources (crosscoders, multi-layer SAEs), per source.

One number for all sources together hides a bad layer or model, so everything here is
reported per source:

- `per_source_reconstruction`: the metrics of `reconstruction_metrics` (FVU, MSE, cosine,
  L0, ...) for each source's slice of the reconstruction;
- `per_source_spliced`: the model's next-token CE and KL when one source's activation is
  replaced by its reconstruction, the others left as they are, with loss recovered against
  zero ablation of that source. The dictionary reads every source from the clean forward
  pass (an acausal crosscoder needs later layers to reconstruct an earlier one);
- `layer_profile`: how a latent's activation mass spreads over the sources, the
  "distribution over layers" of Lawson et al.'s multi-layer SAE analysis.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch, split_label
from sparselens.data.sites import Sites
from sparselens.data.taps import ChunkLike, Tap, make_taps, stack_chunks
from sparselens.dictionaries.stacked import StackedDictionary
from sparselens.evaluation.reconstruction import ReconstructionStats
from sparselens.evaluation.spliced import Predictions, loss_recovered
from sparselens.lens import Lens, SetActivation, ZeroAblate
from sparselens.models.hookpoints import Hookpoint
from sparselens.models.source import LoadedModel


def stacked_inputs(batches: Iterable[ActivationBatch], key: str, dictionary: StackedDictionary,
                   max_tokens: int | None = None) -> Iterator[Tensor]:
    """The checked stacked sources under `key` of every batch, on the dictionary,
    ``(N, n_sources, width)``, at most `max_tokens` rows in all (the last batch is cut)."""
    seen = 0
    sites = Sites(key)
    for index, batch in enumerate(batches):
        x = dictionary.as_sources(sites.inputs_for(dictionary, batch, index))
        if max_tokens is not None:
            x = x[: max_tokens - seen]
        if x.shape[0] == 0:
            break
        yield x
        seen += x.shape[0]


def source_codes(codes: Tensor, source: int) -> Tensor:
    """A source's codes: shared codes ``(N, n)`` as they are, per-layer ``(N, S, n)`` sliced."""
    return codes[..., source, :] if codes.ndim == 3 else codes


@torch.no_grad()
def per_source_reconstruction(dictionary: StackedDictionary, batches: Iterable[ActivationBatch],
                              key: str, *, max_tokens: int | None = None,
                              dense_threshold: float = 0.1) -> list[dict[str, Any]]:
    """Reconstruction and sparsity metrics of every source, in source order."""
    device = dictionary.W_dec.device
    stats = [ReconstructionStats(dictionary.cfg.n_latents, dictionary.cfg.d_source, device)
             for _ in range(dictionary.n_sources)]
    with dictionary.evaluating():
        for x in stacked_inputs(batches, key, dictionary, max_tokens):
            recon, codes = dictionary.reconstruct(x), dictionary.encode(x)
            for s, stat in enumerate(stats):
                stat.update(x[:, s], recon[:, s], source_codes(codes, s))
    results = []
    for name, stat in zip(dictionary.cfg.sources, stats):
        metrics = stat.result(dense_threshold)
        metrics.pop("latent_density")
        results.append({"source": name, **metrics})
    return results


@torch.no_grad()
def layer_profile(dictionary: StackedDictionary, batches: Iterable[ActivationBatch],
                  key: str) -> Tensor:
    """``(n_latents, n_sources)``: each latent's share of its total activation per source
    (rows of latents that never fire are 0). Only meaningful for per-source codes (MLSAE)."""
    mass = torch.zeros(dictionary.cfg.n_latents, dictionary.n_sources, dtype=torch.float64,
                       device=dictionary.W_dec.device)
    for x in stacked_inputs(batches, key, dictionary):
        codes = dictionary.encode(x)
        if codes.ndim != 3:
            raise ValueError("layer_profile needs codes per source (a multi-layer SAE); a "
                             "crosscoder's codes are shared by all sources")
        mass += codes.double().sum(0).T
    return (mass / mass.sum(-1, keepdim=True).clamp_min(1e-300)).cpu()


@torch.no_grad()
def per_source_spliced(dictionary: StackedDictionary,
                       models: LoadedModel | Mapping[str, LoadedModel],
                       chunks: Iterable[ChunkLike], *, batch_size: int = 2,
                       max_sequences: int | None = None) -> list[dict[str, Any]]:
    """CE/KL with each source spliced in turn (see the module docstring), in source order.

    `models` is the model (multi-layer dictionaries) or ``{label: model}`` for sources named
    ``label/hookpoint`` (model diffing). Pass held-out chunks.
    """
    taps = _taps(dictionary, models)
    sites = {name: (tap, hp) for tap in taps for hp, name in zip(tap.hookpoints, tap.names)}
    sources = dictionary.cfg.sources
    sums = [dict.fromkeys(("ce_clean", "ce_spliced", "ce_zero_ablation", "kl_spliced"), 0.0)
            for _ in sources]
    n_predictions = 0
    with dictionary.evaluating():
        chunk_iter = iter(chunks if max_sequences is None else islice(chunks, max_sequences))
        while batch := list(islice(chunk_iter, batch_size)):
            ids, special = stack_chunks(batch)
            keep = ~special
            predictions = Predictions.of(ids, keep)
            if predictions.labels.numel() == 0:
                continue
            acts, clean = _clean_pass(taps, ids, predictions)
            recon = dictionary.reconstruct(torch.stack([acts[s] for s in sources], dim=-2).to(
                dictionary.W_dec.dtype))
            for s, name in enumerate(sources):
                tap, hp = sites[name]
                reference = clean[tap.label]
                spliced = _spliced_log_probs(tap, hp, ids, keep, recon[..., s, :], predictions)
                ablated = _spliced_log_probs(tap, hp, ids, keep, None, predictions)
                sums[s]["ce_clean"] += _nll(reference, predictions.labels)
                sums[s]["ce_spliced"] += _nll(spliced, predictions.labels)
                sums[s]["ce_zero_ablation"] += _nll(ablated, predictions.labels)
                sums[s]["kl_spliced"] += float((reference.exp() * (reference - spliced))
                                               .sum(dtype=torch.float64))
            n_predictions += int(predictions.labels.numel())
    if n_predictions == 0:
        raise ValueError("no next-token predictions to evaluate: pass held-out chunks of at "
                         "least two non-special tokens")
    results = []
    for name, total in zip(sources, sums):
        means = {k: v / n_predictions for k, v in total.items()}
        means["loss_recovered"] = loss_recovered(means["ce_clean"], means["ce_spliced"],
                                                 means["ce_zero_ablation"])
        results.append({"source": name, **means, "n_predictions": n_predictions})
    return results


def _taps(dictionary: StackedDictionary,
          models: LoadedModel | Mapping[str, LoadedModel]) -> list[Tap]:
    """Taps reading exactly the dictionary's sources from `models`."""
    sources = dictionary.cfg.sources
    labelled = not isinstance(models, LoadedModel)
    specs = list(dict.fromkeys(split_label(s)[1] if labelled else s for s in sources))
    taps = make_taps(models, specs)
    known = {name for tap in taps for name in tap.names}
    missing = [s for s in sources if s not in known]
    if missing:
        raise ValueError(f"the dictionary's sources {missing} are not among the hookpoints "
                         f"read from the given models ({sorted(known)}); pass the models "
                         "under the labels the sources use")
    return taps


def _clean_pass(taps: list[Tap], ids: Tensor, predictions: Predictions
                ) -> tuple[dict[str, Tensor], dict[str | None, Tensor]]:
    """Every source's clean activation ``(B, L, width)`` and each model's clean log-probs."""
    acts: dict[str, Tensor] = {}
    log_probs: dict[str | None, Tensor] = {}
    for tap in taps:
        out = Lens(tap.loaded).forward(ids, capture=[str(hp) for hp in tap.hookpoints])
        for hp, name in zip(tap.hookpoints, tap.names):
            acts[name] = out.captured[str(hp)]
        log_probs[tap.label] = _log_probs(out.logits, predictions)
    return acts, log_probs


def _spliced_log_probs(tap: Tap, hp: Hookpoint, ids: Tensor, keep: Tensor,
                       replacement: Tensor | None, predictions: Predictions) -> Tensor:
    """Log-probs with the activation at `hp` replaced (zeros for None) at non-special
    positions (the lens leaves special tokens alone, which is what `keep` marks)."""
    edit = ZeroAblate(str(hp)) if replacement is None else SetActivation(str(hp), replacement)
    return _log_probs(Lens(tap.loaded).forward(ids, edits=[edit]).logits, predictions)


def _log_probs(logits: Tensor, predictions: Predictions) -> Tensor:
    """float32 log-probabilities ``(n_predictions, vocab)`` of the predictions that count."""
    return torch.cat([lp for _, lp in predictions.chunks(logits)]).cpu()


def _nll(log_probs: Tensor, labels: Tensor) -> float:
    return float(-log_probs.gather(1, labels[:, None].to(log_probs.device))
                 .sum(dtype=torch.float64))
