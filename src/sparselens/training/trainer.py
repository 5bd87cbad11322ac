"""One dictionary's training run: the same for every dictionary variant.

A variant shapes training only through the `Dictionary` hooks (`training_loss`,
`before_optimizer_step`, `after_optimizer_step`, `initialize_from_data`); the trainer owns the
rest: Adam and its schedule, gradient clipping, dead-latent tracking, metrics, checkpoints.
The loop over batches lives in `together.fit_together`, which drives one trainer (`fit`) or
several from one pass over the data (a sweep).

Data comes from a factory ``data(skip_batches)`` (see `DataFactory`), so the trainer does not
care whether batches are read from an activation cache or streamed from a model, and a resumed
run continues at exactly the batch where the interrupted one stopped. Each step consumes one
batch, so the step counter is also the data position.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparselens.core.memory import TRIM_EVERY, release_free_memory
from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries.base import Dictionary, LossOutput, StepContext, build
from sparselens.io.atomic import atomic_write_json
from sparselens.io.native import save_dictionary
from sparselens.training import distributed as dp
from sparselens.training.checkpoint import (
    CHECKPOINTS_DIR,
    LATEST_FILE,
    find_checkpoint,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from sparselens.training.config import LogConfig, TrainConfig
from sparselens.training.dead_latents import DeadLatentTracker
from sparselens.training.device_batch import DeviceBatch
from sparselens.training.metrics_log import MetricsLog, RunningMetrics, require_package
from sparselens.training.precision import autocast_context, resolve_autocast
from sparselens.training.preparation import (
    DataFactory,
    Sites,
    build_dictionary,
    check_batch,
    collect_sample,
    initialise,
    non_finite_loss_error,
    pick_sites,
)
from sparselens.training.schedules import lr_factor
from sparselens.training.together import NonFiniteLoss, fit_together

METRICS_FILE = "metrics.jsonl"
CHECKED_BATCHES = 2
"""Batches fully checked (sites, widths, finiteness) at the start of every `fit` call; later
batches are watched through the loss, which any NaN/inf input turns non-finite."""

Sample = tuple[Sites, Tensor, Tensor | None]
"""What `collect_sample` returns: the sites and the first tokens of the data (float32, CPU)."""


@dataclass
class Progress:
    step: int = 0
    """Optimizer steps taken, which is also the number of batches consumed."""
    tokens_seen: int = 0


class Trainer:
    """Train one dictionary: ``Trainer(cfg, data, out_dir).fit()``, or `Trainer.resume`."""

    def __init__(self, cfg: TrainConfig, data: DataFactory, out_dir: str | Path | None = None,
                 dictionary: Dictionary | None = None, *, initialize: bool = True,
                 sample: Sample | None = None) -> None:
        """Start a run: sample the data, build `cfg.architecture` (or adopt `dictionary`), set
        the norm scales and run the data-dependent init. ``initialize=False`` adopts
        `dictionary` as it is (used by `resume`). `sample` is `collect_sample`'s result when
        the caller has read it already (several trainers on one stream share it)."""
        self.device = _device(cfg.device)
        autocast, self.precision_note = resolve_autocast(cfg.autocast, self.device)
        # the config as trained and checkpointed: "auto" resolved, so a resume on other
        # hardware computes in the same precision
        self.cfg = cfg = dataclasses.replace(cfg, autocast=autocast)
        self.data = data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        dp.require_even_split(cfg.batch_size)
        self._check_loggers()
        self.sites: Sites | None = None
        torch.manual_seed(cfg.seed)
        if initialize:
            self._refuse_existing_run()
            dictionary = self._prepare(dictionary, sample)
        elif dictionary is None:
            raise ValueError("initialize=False needs a dictionary to adopt")
        if dictionary.cfg.n_latents != cfg.n_latents:
            raise ValueError(f"the dictionary has {dictionary.cfg.n_latents} latents but the "
                             f"config says n_latents={cfg.n_latents}")
        self.dictionary = dictionary.to(self.device).train()
        if initialize:
            dp.synchronise_initialisation(self.dictionary)
        optim = cfg.optim
        # The fused kernel is 4-6x faster than the default per-tensor loop on CPU (see
        # docs/performance.md); it exists for CPU and CUDA floating-point parameters.
        self.optimizer = torch.optim.Adam(self.dictionary.parameters(), lr=cfg.peak_lr(),
                                          betas=(optim.beta1, optim.beta2), eps=optim.eps,
                                          fused=self.device.type in ("cpu", "cuda"))
        self.dead = DeadLatentTracker(cfg.n_latents, cfg.dead_window, self.device)
        self.progress = Progress()
        self.running = RunningMetrics()
        self.lr = 0.0
        self._first_bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        # the training FVU of the last RECENT_FVU_STEPS steps (a ring on the device: no sync)
        self._fvu_ring = torch.full((RECENT_FVU_STEPS,), torch.nan, dtype=torch.float32,
                                    device=self.device)
        self._fvu_count = 0
        self._clock = (time.perf_counter(), 0)
        self._checked = 0
        self.failed: NonFiniteLoss | None = None
        """Set when a sweep carries on without this run: its loss went non-finite."""
        self._rng = rng_state()  # this run's global RNG state, swapped in around each step

    # ---- setup ----

    def _prepare(self, dictionary: Dictionary | None, sample: Sample | None) -> Dictionary:
        # every rank samples the same global batches, so the init matches a single process
        self.sites, x, y = sample or collect_sample(self.data, self.cfg)
        d_out = (y if y is not None else x).shape[1]
        if dictionary is None:
            dictionary = build_dictionary(self.cfg, self.sites, x.shape[1], d_out)
        elif (dictionary.cfg.d_in, dictionary.cfg.d_out) != (x.shape[1], d_out):
            raise ValueError(f"the dictionary maps {dictionary.cfg.d_in} -> {dictionary.cfg.d_out}"
                             f" but the activations are {x.shape[1]} -> {d_out} wide")
        initialise(dictionary, x, y, self.cfg.normalize_input)
        return dictionary

    def _check_loggers(self) -> None:
        if self.cfg.log.tensorboard:
            require_package("tensorboard", "--log.tensorboard")
        if self.cfg.log.wandb:
            require_package("wandb", "--log.wandb")

    def _refuse_existing_run(self) -> None:
        if self.out_dir is not None and (self.out_dir / CHECKPOINTS_DIR / LATEST_FILE).exists():
            raise FileExistsError(f"{self.out_dir} already holds a training run; resume it "
                                  "(--resume) or choose another output folder")

    @classmethod
    def resume(cls, path: str | Path, data: DataFactory, out_dir: str | Path | None = None,
               log: LogConfig | None = None) -> Trainer:
        """Continue a run from a checkpoint folder, or from the latest checkpoint of a run's
        output folder. The config is the checkpoint's, except `log` if given (logging does not
        change the result). Checksums are verified first."""
        checkpoint = find_checkpoint(path)
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint to resume in {path}; expected "
                                    f"{Path(path) / CHECKPOINTS_DIR / LATEST_FILE}")
        meta, state = read_checkpoint(checkpoint)
        cfg = TrainConfig.from_dict(meta["train_config"])
        cfg.log = log or cfg.log
        dictionary = build(meta["architecture"], **meta["dictionary_config"])
        dictionary.load_state_dict(state["module"])
        out = out_dir if out_dir is not None else checkpoint.parent.parent
        trainer = cls(cfg, data, out, dictionary=dictionary, initialize=False)
        trainer.load_state_dict(state)
        return trainer

    # ---- the loop ----

    @property
    def done(self) -> bool:
        """The token budget is spent, or training stopped on a non-finite loss (`failed`)."""
        return self.failed is not None or self.progress.tokens_seen >= self.cfg.n_tokens

    def fit(self) -> Dictionary:
        """Train until the token budget is spent (or the data runs out); save and return."""
        return fit_together([self])[0]

    # ---- one member of the loop in `together.fit_together` ----

    def begin(self) -> None:
        """Called by the loop before its first batch: restart the clock and the batch checks."""
        self._clock = (time.perf_counter(), self.progress.tokens_seen)
        self._checked = 0

    def step(self, batch: DeviceBatch, log: MetricsLog) -> None:
        """Train on the batch at data position ``self.progress.step``, then log/checkpoint."""
        if self._checked < CHECKED_BATCHES:
            self._check(batch.host)
            self._checked += 1
        self.train_step(batch)
        self._after_step(log)

    def finish(self, log: MetricsLog) -> None:
        """Called by the loop at the end: the last metrics, the final checkpoint and files. A
        run whose recent training FVU is above 1 says so loudly (the output and the summary
        saved with the dictionary): it reconstructs worse than the batch mean."""
        self._report(log)
        warning = self.fvu_warning()
        if warning is not None:
            log.message(f"WARNING: {warning}")
            print(f"WARNING: {warning}", file=sys.stderr, flush=True)
        self.save()

    @property
    def recent_fvu(self) -> float:
        """Mean training FVU of the last quarter of this process's steps, at most the last
        RECENT_FVU_STEPS (NaN before any step): the end of the run, not its start."""
        count = self._fvu_count
        if count == 0:
            return float("nan")
        n = min(RECENT_FVU_STEPS, max(1, math.ceil(count / 4)))
        slots = [(count - 1 - i) % RECENT_FVU_STEPS for i in range(n)]
        return float(self._fvu_ring[slots].mean())

    def fvu_warning(self) -> str | None:
        """The message for a run that ends with training FVU above 1, else None."""
        fvu = self.recent_fvu
        if not fvu > 1.0:
            return None
        return (f"training FVU {fvu:.3f} (mean of the last steps) is above 1 at the end of the "
                "run: "
                f"this {self.cfg.architecture} dictionary reconstructs worse than the mean. "
                "Massive-norm tokens are the usual cause (docs/dictionaries.md, "
                "'Massive-activation tokens'); evaluate it before use")

    def _check(self, batch: ActivationBatch) -> None:
        self.sites = self.sites or pick_sites(self.cfg, batch)
        check_batch(batch, self.sites, self.dictionary, self.progress.step)

    def _after_step(self, log: MetricsLog) -> None:
        step = self.progress.step
        if step % self.cfg.log.every_steps == 0:
            self._report(log)
        every = self.cfg.checkpoint.every_steps
        if every and step % every == 0 and not self.done:
            self._report(log)
            self.save_checkpoint()

    def train_step(self, batch: ActivationBatch | DeviceBatch) -> None:
        """One optimizer step on one batch; metrics stay on the device. The global RNG is
        this dictionary's own during the step (variants may draw noise), so several trainers
        interleaved on one stream each draw what they would draw alone."""
        if isinstance(batch, ActivationBatch):
            batch = DeviceBatch(batch, self.device)
        set_rng_state(self._rng)
        self._train_step(batch)
        self._rng = rng_state()

    def _train_step(self, batch: DeviceBatch) -> None:
        x, target = self._inputs(batch)
        rows = x.shape[0]  # rows read; the same on every rank, whatever the filter leaves
        x, target = self._without_outliers(x, target)
        ctx = StepContext(step=self.progress.step, total_steps=self.cfg.total_steps,
                          dead_mask=self.dead.dead_mask())
        self._set_lr()
        with self._autocast():
            out = self.dictionary.training_loss(x, target, ctx)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        dp.average_gradients(self.dictionary.parameters())
        self.dictionary.before_optimizer_step(ctx)
        grad_norm = self._clip_gradients()
        self.optimizer.step()
        self.dictionary.after_optimizer_step(ctx)
        dp.broadcast_state(self.dictionary, include_parameters=False)
        self._record(out, x if target is None else target, rows, ctx, grad_norm)
        self.progress.step += 1
        self.progress.tokens_seen += dp.global_rows(rows)
        if self.device.type == "cpu" and self.progress.step % TRIM_EVERY == 0:
            release_free_memory()  # bf16 steps otherwise grow the heap (core/memory.py)

    def _inputs(self, batch: DeviceBatch) -> tuple[Tensor, Tensor | None]:
        """Scaled input (and transcoder target) on the training device, in the parameters'
        dtype (cast on the device: the data crosses to it in its stored dtype)."""
        assert self.sites is not None
        dtype = self.dictionary.W_dec.dtype
        x = self.dictionary.scale_input(batch.acts(self.sites.input, dtype))
        if self.sites.target is None:
            return x, None
        return x, batch.acts(self.sites.target, dtype) * self.dictionary.cfg.output_scale

    def _without_outliers(self, x: Tensor, target: Tensor | None
                          ) -> tuple[Tensor, Tensor | None]:
        """Drop the rows whose norm exceeds ``max_norm_ratio * sqrt(width)`` (inputs are
        normalised to mean norm sqrt(width)); every row when none is left."""
        ratio = self.cfg.max_norm_ratio
        if ratio is None:
            return x, target
        keep = torch.linalg.vector_norm(x.float(), dim=-1) <= ratio * x.shape[-1] ** 0.5
        if int(keep.sum()) in (0, len(keep)):  # one host sync
            return x, target
        return x[keep], None if target is None else target[keep]

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.cfg.autocast, self.device)

    def _set_lr(self) -> None:
        factor = lr_factor(self.progress.step, self.cfg.total_steps, self.cfg.optim)
        self.lr = self.cfg.peak_lr() * factor
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def _clip_gradients(self) -> Tensor | None:
        clip = self.cfg.optim.clip_grad_norm
        if not clip:
            return None
        return torch.nn.utils.clip_grad_norm_(self.dictionary.parameters(), clip)

    @torch.no_grad()
    def _record(self, out: LossOutput, target: Tensor, rows: int, ctx: StepContext,
                grad_norm: Tensor | None) -> None:
        fired, l0 = _activity(out, self.cfg.n_latents)
        self.dead.update(dp.fired_on_any_rank(fired), dp.global_rows(rows))
        recon = out.recon.detach()
        variance = (target - target.mean(0)).pow(2).sum().clamp_min(1e-30)
        fvu = ((recon - target).pow(2).sum() / variance).float()
        self._fvu_ring[self._fvu_count % RECENT_FVU_STEPS] = fvu
        self._fvu_count += 1
        metrics = {"loss": out.loss, **out.terms,
                   "fvu": fvu,
                   "l0": l0,
                   "dead_fraction": ctx.dead_mask.float().mean()}  # type: ignore[union-attr]
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        self.running.add(metrics)
        bad = ~torch.isfinite(out.loss.detach()) & (self._first_bad_step < 0)
        self._first_bad_step.masked_fill_(bad, self.progress.step)

    # ---- reporting ----

    def open_log(self, name: str = "train", position: int = 0) -> MetricsLog:
        """The metrics sinks of this run; `name` and `position` place its progress bar."""
        log = self.cfg.log
        if not dp.is_main_process():
            return MetricsLog(None, self.cfg.n_tokens, progress=False)
        if self.precision_note is not None and log.progress:
            print(self.precision_note if name == "train" else f"{name}: {self.precision_note}",
                  file=sys.stderr, flush=True)
        path = (Path(log.path) if log.path
                else self.out_dir / METRICS_FILE if self.out_dir is not None else None)
        base = self.out_dir or Path(".")
        return MetricsLog(path, self.cfg.n_tokens, self.progress.tokens_seen,
                          resume_step=self.progress.step or None, progress=log.progress,
                          tensorboard_dir=base / "tensorboard" if log.tensorboard else None,
                          wandb_project=log.wandb_project if log.wandb else None,
                          run_config=self.cfg.to_dict(), desc=name, position=position)

    def _report(self, log: MetricsLog) -> None:
        values = dp.average_metrics(self.running.flush(), self.device)
        if not values:
            return
        self._raise_if_non_finite()
        now = time.perf_counter()
        start, tokens_before = self._clock
        new_tokens = self.progress.tokens_seen - tokens_before
        record = {"step": self.progress.step, "tokens": self.progress.tokens_seen, "lr": self.lr,
                  **values, "tokens_per_s": new_tokens / max(now - start, 1e-9)}
        log.write(record, new_tokens)
        self._clock = (now, self.progress.tokens_seen)

    def _raise_if_non_finite(self) -> None:
        step = int(self._first_bad_step)
        if step >= 0:
            assert self.sites is not None
            raise NonFiniteLoss(str(non_finite_loss_error(self.data, self.sites, step)))

    # ---- persistence ----

    def state_dict(self) -> dict[str, Any]:
        """Everything that determines the rest of the run (besides the config and the data)."""
        return {"step": self.progress.step, "tokens_seen": self.progress.tokens_seen,
                "module": {k: v.detach().cpu().clone()
                           for k, v in self.dictionary.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "dead": self.dead.state_dict(),
                "rng": self._rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dictionary.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.dead.load_state_dict(state["dead"])
        self.progress = Progress(step=int(state["step"]), tokens_seen=int(state["tokens_seen"]))
        self._rng = state["rng"]

    def save_checkpoint(self) -> Path | None:
        """Write a resumable checkpoint (no-op without an output folder)."""
        if self.out_dir is None:
            return None
        self._raise_if_non_finite()  # never let a diverged state replace a good checkpoint
        meta = {"train_config": self.cfg.to_dict(), "architecture": self.dictionary.architecture,
                "dictionary_config": self.dictionary.cfg.to_dict(),
                "tokens_seen": self.progress.tokens_seen}
        path = None
        if dp.is_main_process():
            path = write_checkpoint(self.out_dir / CHECKPOINTS_DIR, self.dictionary,
                                    self.state_dict(), meta, self.cfg.checkpoint.keep)
        dp.barrier()  # no rank runs ahead (or resumes) before the checkpoint exists
        return path

    def save(self) -> None:
        """Final checkpoint, plus the dictionary itself at the top of the output folder."""
        if self.out_dir is None:
            return
        self.save_checkpoint()
        warning = self.fvu_warning()
        summary = {"steps": self.progress.step, "tokens_seen": self.progress.tokens_seen,
                   "final_train_fvu": None if math.isnan(self.recent_fvu) else self.recent_fvu,
                   "fvu_above_one": warning is not None,
                   "warnings": [warning] if warning else [],
                   "train_config": self.cfg.to_dict()}
        if dp.is_main_process():
            save_dictionary(self.dictionary, self.out_dir, extra={"training": summary})
            atomic_write_json(self.out_dir / "train_config.json", self.cfg.to_dict())
        dp.barrier()


RECENT_FVU_STEPS = 20
"""The end-of-run FVU check reads the mean training FVU of the last quarter of the steps, at
most this many (an average from the start would carry the first steps' FVU in short runs)."""


def _activity(out: LossOutput, n_latents: int) -> tuple[Tensor, Tensor]:
    """Which latents fired in the batch, and the mean L0. Sparse kernels hand over their
    (values, indices) so the dense batch x latents code matrix is never built for this."""
    sparse = getattr(out, "sparse", None)
    if sparse is None:
        active = out.codes.detach() != 0
        return active.any(0), active.sum(-1).float().mean()
    nonzero = sparse.codes.detach() != 0
    fired = torch.zeros(n_latents, dtype=torch.bool, device=nonzero.device)
    fired[sparse.indices[nonzero]] = True
    return fired, nonzero.sum().float() / out.recon.shape[0]


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return dp.local_device(device)
