"""A dictionary attached to a model: where it reads, where its output goes, and the few
operations every edit and splice is made of.

An autoencoder reads and writes the same hookpoint; a transcoder reads one (say ``mlp_in.6``)
and writes another (``mlp_out.6``). Activations arrive in the model's dtype and go back in it;
the dictionary computes in its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sparselens.dictionaries.base import Dictionary
from sparselens.models.hookpoints import Hookpoint


@dataclass(eq=False)
class Attached:
    """One dictionary at its resolved read and write hookpoints."""

    name: str
    dictionary: Dictionary
    read: Hookpoint
    write: Hookpoint
    _directions: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_latents(self) -> int:
        return self.dictionary.cfg.n_latents

    @property
    def dtype(self) -> torch.dtype:
        return self.dictionary.W_dec.dtype

    def check_latent(self, latent: int) -> int:
        if not isinstance(latent, int) or isinstance(latent, bool):
            raise TypeError(f"latent ids are integers, got {latent!r}")
        if not 0 <= latent < self.n_latents:
            raise IndexError(f"latent {latent} is out of range for dictionary {self.name!r}, "
                             f"which has {self.n_latents} latents (0..{self.n_latents - 1})")
        return latent

    def codes(self, x: Tensor) -> Tensor:
        """Dense codes ``(..., n_latents)`` of raw input activations, in the dictionary's dtype."""
        return self.dictionary.encode(x.to(self.dtype))

    def decode(self, codes: Tensor) -> Tensor:
        """Raw-space decoder output of codes (no skip path: edits differ only in the codes)."""
        return self.dictionary.decode(codes)

    def decode_active(self, codes: Tensor, pattern: Tensor) -> Tensor:
        """`decode(codes)` for codes that are zero wherever `pattern` is: gathers the few
        active decoder rows per token instead of multiplying by all of them (and the gradient
        reaches only those entries). Falls back to `decode` for a non-linear decoder."""
        d = self.dictionary
        linear = (type(d).decode is Dictionary.decode
                  and type(d).decode_scaled is Dictionary.decode_scaled)
        k = int((pattern != 0).sum(-1).max()) if pattern.numel() else 0
        if not linear or k == 0 or 4 * k > self.n_latents:
            return self.decode(codes)
        index = pattern.abs().topk(k, dim=-1).indices
        out = torch.einsum("...k,...kd->...d", codes.gather(-1, index), d.W_dec[index]) + d.b_dec
        return out / d.cfg.output_scale if d.cfg.output_scale != 1.0 else out

    def reconstruct(self, x: Tensor) -> Tensor:
        """The dictionary's full output for raw inputs (skip path included)."""
        return self.dictionary(x.to(self.dtype))

    def direction(self, latent: int) -> Tensor:
        """What adding one unit of `latent` adds to the output: ``decode(e_j) - decode(0)``,
        which is the decoder row for a linear decoder and still right for one that is not."""
        if latent not in self._directions:
            with torch.no_grad():
                basis = torch.zeros(2, self.n_latents, dtype=self.dtype,
                                    device=self.dictionary.W_dec.device)
                basis[1, latent] = 1.0
                out = self.decode(basis)
            self._directions[latent] = out[1] - out[0]
        return self._directions[latent]
