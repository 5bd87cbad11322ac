"""Taps: which activations to read from which model, and reading them for a batch of chunks.

Harvesting and streaming share this step: stack the chunks, run each model once up to its
last hookpoint (`capture` with ``stop_early``: no later layer, no logits), and keep one row
per non-special token. Special tokens (BOS, padding) are dropped because their activations
are outliers (Gemma's BOS residual norm is hundreds of times the typical one) that would
dominate a dictionary's loss. Rows stay aligned across hookpoints and models: row i is the
same token everywhere, which paired training (transcoders, crosscoders, model diffing) needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch, labelled_name
from sparselens.models.hookpoints import Hookpoint, capture, resolve
from sparselens.models.source import LoadedModel


class ChunkLike(Protocol):
    """What harvesting needs from a chunk (`sparselens.data.chunking.Chunk` fits)."""

    ids: Tensor
    special: Tensor
    doc_id: int


@dataclass(frozen=True)
class Tap:
    """One model and the hookpoints read from it, under the names they get in a cache."""

    label: str | None
    """Model label (None for a single-model harvest); prefixes names as ``label/hookpoint``."""
    loaded: LoadedModel
    hookpoints: tuple[Hookpoint, ...]
    names: tuple[str, ...]


@dataclass
class ChunkRows:
    """The rows read from one batch of chunks, and the chunks' full token matrix."""

    rows: ActivationBatch
    tokens: Tensor
    """``(n_chunks, context_len)`` token ids, special tokens included."""
    doc_ids: Tensor
    """``(n_chunks,)``."""


def make_taps(models: LoadedModel | Mapping[str, LoadedModel],
              specs: Sequence[str]) -> list[Tap]:
    """Resolve `specs` on every model. A spec naming one hookpoint keeps its spelling
    (``resid.6``); a wildcard expands to module paths. Several models need labels."""
    if not specs:
        raise ValueError("no hookpoints given; name at least one (e.g. resid.6)")
    labelled = {None: models} if isinstance(models, LoadedModel) else dict(models)
    if not labelled:
        raise ValueError("no model given")
    if len(labelled) > 1:
        _check_same_vocabulary(labelled)
    taps, seen = [], set()
    for label, loaded in labelled.items():
        hookpoints, names = [], []
        for spec in specs:
            resolved = resolve(loaded.model, spec)
            for hp in resolved:
                name = spec.strip() if len(resolved) == 1 else str(hp)
                name = labelled_name(label, name)
                if name in seen:
                    raise ValueError(f"hookpoint {name!r} is requested twice")
                seen.add(name)
                hookpoints.append(hp)
                names.append(name)
        taps.append(Tap(label, loaded, tuple(hookpoints), tuple(names)))
    return taps


def _check_same_vocabulary(models: Mapping[str | None, LoadedModel]) -> None:
    sizes = {label: len(loaded.tokenizer) for label, loaded in models.items()}  # type: ignore
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the models have different vocabularies {sizes}; reading several "
                         "models on the same tokens needs one shared tokenizer")


def stack_chunks(chunks: Sequence[ChunkLike]) -> tuple[Tensor, Tensor]:
    """``(ids, special)`` as ``(n, L)`` tensors; every chunk must have the same length."""
    lengths = {int(c.ids.shape[-1]) for c in chunks}
    if len(lengths) != 1:
        raise ValueError(f"chunks have different lengths {sorted(lengths)}; harvesting needs "
                         "fixed-length chunks (see sparselens.data.chunking.chunk_texts)")
    ids = torch.stack([c.ids.reshape(-1) for c in chunks]).long()
    special = torch.stack([c.special.reshape(-1) for c in chunks]).bool()
    if special.shape != ids.shape:
        raise ValueError("a chunk's `special` mask does not match its `ids` shape")
    return ids, special


def forward_kwargs(model: torch.nn.Module) -> dict[str, bool]:
    """``use_cache=False`` for models that take it: a harvest never reuses keys and values,
    and building the cache costs memory and time. ``interpolate_pos_encoding=True`` for
    vision models that take it (ViT): images of any size that fits the patch grid."""
    parameters = inspect.signature(model.forward).parameters
    kwargs = {"use_cache": False} if "use_cache" in parameters else {}
    if "interpolate_pos_encoding" in parameters:
        kwargs["interpolate_pos_encoding"] = True
    return kwargs


def model_inputs(loaded: LoadedModel, chunks: Sequence[ChunkLike], ids: Tensor
                 ) -> dict[str, Tensor]:
    """Token ids for a language model; image chunks (`sparselens.data.image_harvest`) carry
    ``pixel_values``, which a vision model takes instead (in its own dtype)."""
    pixels = [getattr(chunk, "pixel_values", None) for chunk in chunks]
    if pixels[0] is None:
        return {"input_ids": ids.to(loaded.device)}
    dtype = next(loaded.model.parameters()).dtype
    return {"pixel_values": torch.stack(pixels).to(loaded.device, dtype)}


def spatial_as_tokens(act: Tensor, n_seq: int, length: int) -> Tensor:
    """A CNN feature map ``(B, C, H, W)`` with ``H * W == length`` as ``(B, H * W, C)``
    (row-major positions, `sparselens.data.image_harvest`); anything else unchanged."""
    if act.ndim == 4 and act.shape[0] == n_seq and act.shape[2] * act.shape[3] == length:
        return act.flatten(2).transpose(1, 2)
    return act


@torch.no_grad()  # not inference_mode: streamed rows must be usable as autograd inputs
def read_chunks(taps: Sequence[Tap], chunks: Sequence[ChunkLike], first_seq: int) -> ChunkRows:
    """Run every tap's model once on `chunks`; sequence ids count up from `first_seq`."""
    ids, special = stack_chunks(chunks)
    n_seq, length = ids.shape
    keep = ~special.reshape(-1)
    acts: dict[str, Tensor] = {}
    for tap in taps:
        model = tap.loaded.model
        captured = capture(model, list(tap.hookpoints), stop_early=True,
                           **model_inputs(tap.loaded, chunks, ids), **forward_kwargs(model))
        for hp, name in zip(tap.hookpoints, tap.names):
            act = spatial_as_tokens(captured[hp], n_seq, length)
            if act.shape[:2] != (n_seq, length):
                raise ValueError(f"hookpoint {name!r} gave shape {tuple(act.shape)}, not "
                                 f"(batch, position, width); pick a per-token hookpoint")
            rows = act.reshape(n_seq * length, -1)[keep.to(act.device)].cpu()
            if not torch.isfinite(rows).all():
                raise ValueError(f"non-finite activations at {name!r} in sequences "
                                 f"{first_seq}..{first_seq + n_seq - 1}; in float16 this is "
                                 "usually overflow: load the model in float32 or bfloat16")
            acts[name] = rows
    seq_ids = torch.arange(first_seq, first_seq + n_seq).repeat_interleave(length)
    positions = torch.arange(length).repeat(n_seq)
    rows = ActivationBatch(acts=acts, token_ids=ids.reshape(-1)[keep], seq_ids=seq_ids[keep],
                           positions=positions[keep])
    doc_ids = torch.tensor([int(c.doc_id) for c in chunks], dtype=torch.long)
    return ChunkRows(rows=rows, tokens=ids, doc_ids=doc_ids)
