"""The sites view: which activation sites a run reads, resolved once, and the checked accessor.

A dictionary reads an *input* site and, for a transcoder, a *target* site. Crosscoders and
multi-layer SAEs read several aligned *sources* as one input; its name joins the source names
(``base/resid.6+chat/resid.6``, see `sparselens.data.batch.join_sources`) and batches carry
the sources side by side, ``(B, n_sources * width)``.

`Sites` answers, in one place, what training, evaluation, interpretation and the pipelines all
ask: the cache's names for the input and target (from a dictionary's or a training config's
``hookpoint``/``target_hookpoint``, or the cache's only hookpoint), their widths (checked
against the dictionary), the stacked sources, the global scales, and the held-out rule of the
split. `Sites.inputs`/`Sites.targets` take the checked tensors out of an `ActivationBatch`;
`sparselens.data.factory` makes the train and held-out batch streams from the same view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch, split_sources

if TYPE_CHECKING:
    from sparselens.data.cache import ActivationCache


@dataclass(frozen=True)
class HeldoutRule:
    """How a cache's sequences split into train and held-out (`sparselens.data.split`)."""

    fraction: float
    seed: int


@dataclass(frozen=True)
class Sites:
    """The sites one dictionary run reads; build it with `from_cache` or `from_batch`."""

    input: str
    """Name of the input in the data; a stack of sources joins them with ``+``."""
    target: str | None = None
    """Name of the reconstruction target (transcoders); None: the input itself."""
    d_in: int | None = None
    """Width of the input (all sources together), when known from the cache."""
    d_out: int | None = None
    """Width of the target, when known from the cache."""
    input_scale: float = 1.0
    """Global factor on raw inputs, as the config records it (1 once folded into a saved
    dictionary; the dictionary applies it itself, the accessor returns raw rows)."""
    output_scale: float = 1.0
    """Global factor on raw targets, likewise."""
    heldout: HeldoutRule | None = None
    """The split rule of the cache the names were resolved in (None: not from a cache)."""

    @property
    def sources(self) -> list[str]:
        """The stacked sources of the input (one entry for a plain dictionary)."""
        return split_sources(self.input)

    @property
    def is_stacked(self) -> bool:
        return len(self.sources) > 1

    @property
    def names(self) -> list[str]:
        """The names every batch must carry: the input, then the target if there is one."""
        return [self.input] if self.target is None else [self.input, self.target]

    # ---- resolving ----

    @classmethod
    def from_cache(cls, cache: ActivationCache, spec: Any, hookpoint: str | None = None
                   ) -> Sites:
        """Resolve `spec` (a dictionary or training config: anything with ``hookpoint`` and
        ``target_hookpoint``, optionally ``d_in``/``d_out`` and scales) in `cache`.

        `hookpoint` overrides the input; without either, a cache with a single hookpoint
        supplies it. Widths the spec declares must match the cache's.
        """
        name = hookpoint or getattr(spec, "hookpoint", None)
        if name is None:
            if len(cache.hookpoints) != 1:
                raise ValueError("no input hookpoint is recorded and the cache has several ("
                                 f"{', '.join(cache.hookpoints)}); pass --hookpoint")
            name = cache.hookpoints[0]
        target_name = getattr(spec, "target_hookpoint", None)
        source = cache.resolve(name)
        target = cache.resolve(target_name) if target_name else None
        d_in, d_out = cache.width(source), cache.width(target or source)
        for key, actual, site in (("d_in", d_in, source), ("d_out", d_out, target or source)):
            expected = getattr(spec, key, None)
            if expected is not None and expected != actual:
                raise ValueError(f"the dictionary expects {key}={expected} but {site!r} in the "
                                 f"cache {cache.folder} has width {actual}; is it the "
                                 "dictionary trained on this hookpoint and model?")
        rule = cache.manifest["heldout"]
        return cls(source, target, d_in, d_out,
                   input_scale=float(getattr(spec, "input_scale", 1.0)),
                   output_scale=float(getattr(spec, "output_scale", 1.0)),
                   heldout=HeldoutRule(float(rule["fraction"]), int(rule["seed"])))

    @classmethod
    def from_batch(cls, batch: ActivationBatch, hookpoint: str | None = None,
                   target: str | None = None) -> Sites:
        """The sites named by `hookpoint`/`target` (or the batch's only name), checked against
        what the data provides (for data that does not come from a cache)."""
        available = sorted(batch.acts)
        if hookpoint is None:
            if len(available) != 1:
                raise ValueError(f"the data has several hookpoints {available}; choose the "
                                 "input with --hookpoint (and --target-hookpoint for a "
                                 "transcoder)")
            return cls(available[0], target)
        for name in (hookpoint, target):
            if name is not None and name not in batch.acts:
                raise ValueError(f"hookpoint {name!r} is not in the data; it has {available}")
        return cls(hookpoint, target)

    # ---- the checked accessor ----

    def inputs(self, batch: ActivationBatch, index: int = 0,
               width: int | None = None) -> Tensor:
        """The batch's input ``(B, d_in)``, checked (present, 2-D, width, finite)."""
        return _checked(batch, self.input, width or self.d_in, index)

    def targets(self, batch: ActivationBatch, index: int = 0,
                width: int | None = None) -> Tensor:
        """The batch's reconstruction target ``(B, d_out)`` (the input for an autoencoder)."""
        return _checked(batch, self.target or self.input, width or self.d_out, index)

    def inputs_for(self, dictionary: Any, batch: ActivationBatch, index: int = 0) -> Tensor:
        """The checked input as `dictionary` takes it: its ``cfg.d_in`` wide, on the device and
        in the dtype of its decoder."""
        weight = dictionary.W_dec
        return self.inputs(batch, index, dictionary.cfg.d_in).to(weight.device, weight.dtype)

    def targets_for(self, dictionary: Any, batch: ActivationBatch, index: int = 0) -> Tensor:
        """The checked target as `dictionary` reconstructs it (``cfg.d_out`` wide)."""
        weight = dictionary.W_dec
        return self.targets(batch, index, dictionary.cfg.d_out).to(weight.device, weight.dtype)

    def check(self, batch: ActivationBatch, index: int = 0, d_in: int | None = None,
              d_out: int | None = None) -> None:
        """Refuse a training batch with missing sites, the wrong width, or non-finite values
        (`index` is the training step)."""
        _checked(batch, self.input, d_in or self.d_in, index, training=True)
        if self.target is not None:
            _checked(batch, self.target, d_out or self.d_out, index, training=True)


def non_finite_message(site: str, index: int, training: bool = True) -> str:
    where = f"batch {index} (training step {index})" if training else f"batch {index}"
    return (f"activations at hookpoint {site!r} in {where} contain NaN or inf; the cache is "
            "corrupted or the model overflowed in low precision: re-harvest (in float32) or "
            "drop those rows")


def _checked(batch: ActivationBatch, site: str, width: int | None, index: int,
             training: bool = False) -> Tensor:
    if site not in batch.acts:
        raise ValueError(f"batch {index} has no activations for hookpoint {site!r} (it has "
                         f"{sorted(batch.acts)})")
    acts = batch.acts[site]
    if acts.ndim != 2:
        raise ValueError(f"batch {index}: activations at {site!r} must be (tokens, width), got "
                         f"shape {tuple(acts.shape)}")
    if width is not None and acts.shape[1] != width:
        raise ValueError(f"activations at {site!r} have width {acts.shape[1]} but the "
                         f"dictionary expects {width}; the dictionary or its config was made "
                         "for another hookpoint or model")
    if not bool(torch.isfinite(acts).all()):
        raise ValueError(non_finite_message(site, index, training))
    return acts
