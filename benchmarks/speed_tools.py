"""One training step per toolkit, each as that toolkit's own trainer takes it.

Used by `train_speed.py`. Every runner trains the same TopK configuration on the same batches
with the same learning rate (Gao et al.'s 2e-4 / sqrt(n / 2^14), constant) and exposes
``step(x)`` and ``reconstruct(x)``. What each step contains follows the toolkit's trainer:

- sparselens: ``training_loss`` (the sparse kernel for TopK and, in the variants table,
  BatchTopK, AbsTopK and Matryoshka), decoder-gradient projection, gradient clipping at 1,
  Adam, decoder renormalisation, dead-latent counts for AuxK.
- eai-sparsify: its ``SparseCoder`` forward (``fvu + auxk_alpha * auxk``), decoder-gradient
  projection, Adam, decoder renormalisation, did-fire bookkeeping (its ``Trainer`` needs a
  model to hook, so its step is reproduced here line for line). ``auxk_alpha`` = 1/32.
- SAELens: ``TopKTrainingSAE.training_forward_pass`` and the rest of ``SAETrainer._train_step``
  (firing statistics, gradient clipping at 1, Adam).
- dictionary_learning: ``TopKTrainer.update`` itself.

"bf16" wraps the forward in ``torch.autocast("cpu", dtype=torch.bfloat16)`` for every tool
(SAELens's ``autocast`` option; sparsify and dictionary_learning only autocast on CUDA).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor


class Runner(Protocol):
    def step(self, x: Tensor) -> None: ...

    def reconstruct(self, x: Tensor) -> Tensor: ...


def learning_rate(n_latents: int) -> float:
    return 2e-4 / (n_latents / 2**14) ** 0.5


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class DeadCounter:
    """Tokens since each latent last fired; dead after `window` tokens (the same rule for all)."""

    def __init__(self, n_latents: int, window: int) -> None:
        self.since = torch.zeros(n_latents, dtype=torch.long)
        self.window = window

    def mask(self) -> Tensor:
        return self.since >= self.window

    def update(self, fired_indices: Tensor, n_tokens: int) -> None:
        self.since.add_(n_tokens).index_fill_(0, fired_indices.reshape(-1), 0)


class SparselensRunner:
    def __init__(self, spec: dict[str, Any], sample: Tensor) -> None:
        from sparselens.dictionaries import StepContext, build

        self.StepContext = StepContext
        extra = dict(spec.get("dictionary", {}))
        self.sae = build(spec.get("architecture", "topk"), d_in=spec["d"],
                         n_latents=spec["n_latents"], **extra)
        self.sae.initialize_from_data(sample)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=learning_rate(spec["n_latents"]),
                                    eps=6.25e-10, fused=True)
        self.bf16 = spec["mode"] == "bf16"
        self.dead = DeadCounter(spec["n_latents"], spec["dead_tokens"])
        self.steps, self.total = 0, spec["steps"]

    def step(self, x: Tensor) -> None:
        ctx = self.StepContext(step=self.steps, total_steps=self.total,
                               dead_mask=self.dead.mask())
        with autocast(self.bf16):
            out = self.sae.training_loss(x, None, ctx)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.sae.before_optimizer_step(ctx)
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), 1.0)
        self.opt.step()
        self.sae.after_optimizer_step(ctx)
        sparse = getattr(out, "sparse", None)  # the sparse kernel's (values, indices)
        self.training_path = "dense" if sparse is None else "kernel"
        fired = sparse.indices if sparse is not None else out.codes.detach().ne(0).any(0)
        if fired.dtype == torch.bool:
            fired = fired.nonzero()
        self.dead.update(fired, x.shape[0])
        self.steps += 1

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.sae(x)


class SparsifyRunner:
    def __init__(self, spec: dict[str, Any], sample: Tensor) -> None:
        from sparsify import SparseCoder, SparseCoderConfig

        self.sae = SparseCoder(spec["d"], SparseCoderConfig(num_latents=spec["n_latents"],
                                                            k=spec["k"]), dtype=torch.float32)
        self.sae.b_dec.data = sample.mean(0)  # its trainer: mean of the first batch
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=learning_rate(spec["n_latents"]))
        self.bf16 = spec["mode"] == "bf16"
        self.dead = DeadCounter(spec["n_latents"], spec["dead_tokens"])

    def step(self, x: Tensor) -> None:
        self.sae.set_decoder_norm_to_unit_norm()
        with autocast(self.bf16):
            out = self.sae(x, dead_mask=self.dead.mask())
            loss = out.fvu + out.auxk_loss / 32
        loss.backward()
        self.sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad()
        self.dead.update(out.latent_indices, x.shape[0])

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.sae(x).sae_out


class SAELensRunner:
    def __init__(self, spec: dict[str, Any], sample: Tensor) -> None:
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

        cfg = TopKTrainingSAEConfig(d_in=spec["d"], d_sae=spec["n_latents"], k=spec["k"],
                                    dtype="float32", device="cpu")
        self.sae = TopKTrainingSAE(cfg)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=learning_rate(spec["n_latents"]),
                                    betas=(0.9, 0.999))
        self.coefficients = {name: getattr(value, "value", value)
                             for name, value in self.sae.get_coefficients().items()}
        self.bf16 = spec["mode"] == "bf16"
        self.since_fired = torch.zeros(spec["n_latents"])
        self.dead = DeadCounter(spec["n_latents"], spec["dead_tokens"])
        self.steps = 0

    def step(self, x: Tensor) -> None:
        from sae_lens.saes.sae import TrainStepInput

        self.sae.train()
        with autocast(self.bf16):
            out = self.sae.training_forward_pass(step_input=TrainStepInput(
                sae_in=x, coefficients=self.coefficients, dead_neuron_mask=self.dead.mask(),
                n_training_steps=self.steps, is_logging_step=False))
            with torch.no_grad():  # its trainer's firing statistics
                firing = out.feature_acts.bool().float()
                did_fire = firing.sum(-2).bool()
                if did_fire.is_sparse:
                    did_fire = did_fire.to_dense()
                self.since_fired += 1
                self.since_fired[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad()
        self.dead.update(did_fire.nonzero(), x.shape[0])
        self.steps += 1

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        self.sae.eval()
        return self.sae(x)


class DictionaryLearningRunner:
    def __init__(self, spec: dict[str, Any], sample: Tensor) -> None:
        from dictionary_learning.trainers.top_k import TopKTrainer

        self.trainer = TopKTrainer(steps=spec["steps"] + 1, activation_dim=spec["d"],
                                   dict_size=spec["n_latents"], k=spec["k"], layer=0,
                                   lm_name="benchmark", lr=learning_rate(spec["n_latents"]),
                                   warmup_steps=1, device="cpu", seed=0)
        self.bf16 = spec["mode"] == "bf16"
        self.steps = 0

    def step(self, x: Tensor) -> None:
        with autocast(self.bf16):
            self.trainer.update(self.steps, x)
        self.steps += 1

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.trainer.ae(x)


TOOLS: dict[str, tuple[str, Callable[[dict[str, Any], Tensor], Runner]]] = {
    "sparselens": ("sparselens", SparselensRunner),
    "eai-sparsify": ("sparsify", SparsifyRunner),
    "sae-lens": ("sae_lens", SAELensRunner),
    "dictionary-learning": ("dictionary_learning", DictionaryLearningRunner),
}
"""Tool name -> (import name used to check that it is installed, runner)."""


def installed(tool: str) -> bool:
    return importlib.util.find_spec(TOOLS[tool][0]) is not None
