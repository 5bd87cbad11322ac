"""Before the first step: pick the sites, check the data, build and initialise the dictionary.

The sites and their checks are `sparselens.data.sites.Sites`; `pick_sites` and `check_batch`
are the trainer's names for them (``DataFactory`` and ``Sites`` are re-exported for it).

Everything here runs once per run (or on the first batches after a resume), so it may read
values back to the host freely and give precise error messages.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.factory import DataFactory
from sparselens.data.sites import Sites, non_finite_message
from sparselens.dictionaries.base import Dictionary, build
from sparselens.training.config import TrainConfig

__all__ = ["DataFactory", "Sites", "build_dictionary", "check_batch", "collect_sample",
           "initialise", "non_finite_loss_error", "norm_scale", "pick_sites"]


def pick_sites(cfg: TrainConfig, batch: ActivationBatch) -> Sites:
    """The sites of `cfg` (or the data's only hookpoint), checked against what `batch` has."""
    return Sites.from_batch(batch, cfg.hookpoint, cfg.target_hookpoint)


def check_batch(batch: ActivationBatch, sites: Sites, dictionary: Dictionary | None,
                index: int) -> None:
    """Refuse a batch with missing sites, the wrong width, or non-finite values."""
    widths = (None, None) if dictionary is None else (dictionary.cfg.d_in, dictionary.cfg.d_out)
    sites.check(batch, index, *widths)


def non_finite_loss_error(data: DataFactory, sites: Sites, step: int) -> ValueError:
    """Why the loss went NaN/inf at `step`: the inputs of that batch (re-read from the data,
    which is deterministic), or, if they are finite, divergence."""
    batch = next(data(step), None)
    for site in sites.names:
        if batch is not None and not bool(torch.isfinite(batch.acts[site]).all()):
            return ValueError(non_finite_message(site, step))
    return ValueError(f"the loss became NaN/inf at step {step} although that batch is finite: "
                      "training diverged; lower optim.lr, keep gradient clipping on, or "
                      "normalise inputs, then resume from the last checkpoint")


def collect_sample(data: DataFactory, cfg: TrainConfig) -> tuple[Sites, Tensor, Tensor | None]:
    """The first `cfg.init_tokens` tokens of the run, checked, as float32 on the CPU."""
    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    sites: Sites | None = None
    have = 0
    for index, batch in enumerate(data(0)):
        sites = sites or pick_sites(cfg, batch)
        inputs.append(sites.inputs(batch, index).float().cpu())
        if sites.target is not None:
            targets.append(sites.targets(batch, index).float().cpu())
        have += len(batch)
        if have >= cfg.init_tokens:
            break
    if sites is None or have == 0:
        raise ValueError("the training data is empty: no batches to train on")
    x = torch.cat(inputs)[: cfg.init_tokens]
    y = torch.cat(targets)[: cfg.init_tokens] if targets else None
    return sites, x, y


def build_dictionary(cfg: TrainConfig, sites: Sites, d_in: int, d_out: int) -> Dictionary:
    """Build `cfg.architecture` for data of these widths; explicit widths must agree."""
    fields: dict = {"d_in": d_in, "n_latents": cfg.n_latents, "dtype": cfg.dtype,
                    "hookpoint": sites.input}
    if sites.target is not None:
        fields.update(d_out=d_out, target_hookpoint=sites.target, pre_encoder_bias=False)
    for key, actual in (("d_in", d_in), ("d_out", d_out)):
        given = cfg.dictionary.get(key)
        if given is not None and given != actual:
            raise ValueError(f"dictionary {key}={given} does not match the activations' width "
                             f"{actual}; remove {key} from the config or use matching data")
    try:
        return build(cfg.architecture, **(fields | cfg.dictionary))
    except TypeError as err:
        raise ValueError(f"invalid dictionary config for {cfg.architecture!r}: {err}") from None


def norm_scale(x: Tensor) -> float:
    """The factor that makes the mean token norm sqrt(width) (Gao et al.'s normalisation)."""
    mean_norm = float(x.norm(dim=1).mean())
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        raise ValueError("cannot normalise activations whose mean norm is "
                         f"{mean_norm}; the sample is all zeros or not finite")
    return math.sqrt(x.shape[1]) / mean_norm


@torch.no_grad()
def initialise(dictionary: Dictionary, x: Tensor, y: Tensor | None, normalize: bool) -> None:
    """Set the norm scales (if asked) and run the variant's data-dependent init on the sample."""
    if normalize:
        scale = norm_scale(x)
        dictionary.cfg.input_scale = scale
        dictionary.cfg.output_scale = norm_scale(y) if y is not None else scale
    dtype = dictionary.W_dec.dtype
    xs = (x * dictionary.cfg.input_scale).to(dtype)
    ys = None if y is None else (y * dictionary.cfg.output_scale).to(dtype)
    dictionary.initialize_from_data(xs, ys)
