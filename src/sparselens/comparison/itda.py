"""ITDA: a dictionary built from activations themselves, at inference time, without training.

Leask, Nanda and Al Moubayed, "Inference-time decomposition of activations (ITDA): a scalable
approach to interpreting large language models" (ICML 2025). Activations stream past in
batches; each is decomposed by `k` steps of matching pursuit over the current dictionary
(`sparselens.dictionaries.mp.matching_pursuit`, the encoder of the `mp` variant); one that the
dictionary reconstructs badly is added to it, normalised, as a new atom. An atom is therefore an
actual activation, labelled by where it came from: (sequence, position) in the shared text.

Because atoms are labelled by position in the text, two models run on the same token sequences
can be compared without any alignment of their spaces: the Jaccard similarity (intersection
over union) of their atom label sets. The paper uses it to compare layers and models.

Choices here (the paper's code differs in details): the error is the squared residual of the
unit-normalised activation (a relative error, so the threshold does not depend on the
activation scale); every activation of a batch above the threshold joins the dictionary at
once (batches should therefore be small compared with the dictionary); the first atom is the
first activation seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries.mp import matching_pursuit


@dataclass
class ITDADictionary:
    """Atoms (unit activations) and their labels."""

    atoms: Tensor
    """``(n_atoms, d)`` float32 unit rows."""
    labels: Tensor
    """``(n_atoms, 2)`` int64: (sequence id, position) of the activation each atom copies."""
    k: int
    """Matching pursuit steps used to build it (and to encode with it)."""
    threshold: float
    """Relative squared error above which an activation became an atom."""
    n_seen: int = 0
    """Activations streamed while building."""

    @property
    def n_atoms(self) -> int:
        return int(self.atoms.shape[0])

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes ``(B, n_atoms)`` of raw activations by `k` steps of matching pursuit."""
        return matching_pursuit(x.float(), self.atoms, min(self.k, self.n_atoms))

    def relative_error(self, x: Tensor) -> Tensor:
        """Per activation: squared error of the reconstruction over the squared norm."""
        x = x.float()
        recon = self.encode(x) @ self.atoms
        return (x - recon).pow(2).sum(-1) / x.pow(2).sum(-1).clamp_min(1e-12)

    def jaccard(self, other: ITDADictionary) -> float:
        """Intersection over union of the two atom label sets."""
        mine = set(map(tuple, self.labels.tolist()))
        theirs = set(map(tuple, other.labels.tolist()))
        union = mine | theirs
        return len(mine & theirs) / len(union) if union else 1.0


@torch.no_grad()
def build_itda(batches: Iterable[tuple[Tensor, Tensor, Tensor]], k: int = 40,
               threshold: float = 0.1, max_atoms: int | None = None) -> ITDADictionary:
    """Stream ``(activations (B, d), seq_ids (B,), positions (B,))`` batches into an ITDA.

    An activation joins when matching pursuit with `k` atoms leaves more than `threshold` of
    its squared norm unexplained; growth stops at `max_atoms`.
    """
    if k < 1 or not 0 < threshold < 1:
        raise ValueError(f"k must be >= 1 and threshold in (0, 1), got {k} and {threshold}")
    atoms: Tensor | None = None
    labels: list[Tensor] = []
    seen = 0
    for acts, seq_ids, positions in batches:
        x = acts.detach().float()
        norms = x.norm(dim=-1, keepdim=True)
        valid = norms.squeeze(-1) > 0
        unit = x[valid] / norms[valid]
        label = torch.stack([seq_ids[valid].long(), positions[valid].long()], dim=1)
        seen += int(x.shape[0])
        if unit.shape[0] == 0:
            continue
        if atoms is None:
            atoms, labels = unit[:1], [label[:1]]
            unit, label = unit[1:], label[1:]
        if unit.shape[0]:
            codes = matching_pursuit(unit, atoms, min(k, atoms.shape[0]))
            error = (unit - codes @ atoms).pow(2).sum(-1)
            new = error > threshold
            if max_atoms is not None:
                room = max(0, max_atoms - atoms.shape[0])
                new &= new.cumsum(0) <= room
            atoms = torch.cat([atoms, unit[new]])
            labels.append(label[new])
        if max_atoms is not None and atoms.shape[0] >= max_atoms:
            break
    if atoms is None:
        raise ValueError("no activations to build an ITDA dictionary from")
    return ITDADictionary(atoms, torch.cat(labels), k, threshold, seen)


def itda_from_cache(cache: object, hookpoint: str, n_tokens: int, k: int = 40,
                    threshold: float = 0.1, batch_size: int = 256,
                    max_atoms: int | None = None) -> ITDADictionary:
    """An ITDA dictionary of the first `n_tokens` rows of an activation cache (unshuffled,
    training split): two hookpoints or two models of one cache see the same tokens in the same
    order, so their dictionaries' labels are comparable with `ITDADictionary.jaccard`."""
    name = cache.resolve(hookpoint)  # type: ignore[attr-defined]

    def batches():
        seen = 0
        for batch in cache.batches(batch_size, hookpoints=[name],  # type: ignore[attr-defined]
                                   split="train", shuffle=False):
            take = min(len(batch), n_tokens - seen)
            yield batch.acts[name][:take], batch.seq_ids[:take], batch.positions[:take]
            seen += take
            if seen >= n_tokens:
                return

    return build_itda(batches(), k=k, threshold=threshold, max_atoms=max_atoms)
