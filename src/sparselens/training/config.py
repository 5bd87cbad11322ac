"""What a training run is: every choice in one small, serialisable dataclass tree.

The field docstrings become ``sparselens train --help``. Widths of the data (``d_in``,
``d_out``) are not here: the trainer reads them from the activations, so a config cannot
disagree with its data except through an explicit ``dictionary`` entry, which is checked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

DecayKind = Literal["constant", "linear", "cosine"]
AUTOCAST_CHOICES = {"auto": "auto", "bfloat16": "bfloat16", "bf16": "bfloat16",
                    "float16": "float16", "fp16": "float16", "float32": "float32",
                    "fp32": "float32", "none": "float32"}
"""Accepted --autocast spellings and what they mean; "none" (any case, or None) is float32."""

# Gao et al. fit lr = 2e-4 at 2^14 latents and scale it with 1/sqrt(width).
REFERENCE_LR = 2e-4
REFERENCE_WIDTH = 2**14
# Gao et al. call a latent dead after 10M tokens without firing.
PAPER_DEAD_TOKENS = 10_000_000


@dataclass
class OptimConfig:
    """Adam, the learning-rate schedule and gradient clipping."""

    lr: float | None = None
    """Peak learning rate; None scales with width as 2e-4 / sqrt(n_latents / 16384) (Gao et al.)."""
    warmup: float = 0.01
    """Fraction of the steps spent warming the learning rate up linearly from 0."""
    decay: DecayKind = "linear"
    """Shape of the decay to 0 over the last `decay_fraction` of the steps."""
    decay_fraction: float = 0.2
    """Fraction of the steps (at the end) over which the learning rate decays to 0."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    eps: float = 6.25e-10
    """Adam epsilon (Gao et al. use 6.25e-10)."""
    clip_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; 0 or None disables clipping."""

    def __post_init__(self) -> None:
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr must be a positive number or None, got {self.lr!r}")
        for name in ("warmup", "decay_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"optim.{name} is a fraction of the run, in [0, 1]; got {value}")
        if self.warmup + self.decay_fraction > 1.0:
            raise ValueError(f"optim.warmup ({self.warmup}) + optim.decay_fraction "
                             f"({self.decay_fraction}) exceed the whole run; lower one of them")
        if self.decay not in ("constant", "linear", "cosine"):
            raise ValueError(f"optim.decay must be constant, linear or cosine, got {self.decay!r}")
        if self.clip_grad_norm is not None and self.clip_grad_norm < 0:
            raise ValueError("optim.clip_grad_norm must be >= 0 (0 disables clipping), "
                             f"got {self.clip_grad_norm}")


@dataclass
class CheckpointConfig:
    """When to save the resumable training state."""

    every_steps: int = 1000
    """Save a resumable checkpoint every this many steps (0: only at the end)."""
    keep: int = 2
    """How many recent checkpoints to keep on disk."""

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.keep < 1:
            raise ValueError("checkpoint.every_steps must be >= 0 and checkpoint.keep >= 1, got "
                             f"{self.every_steps} and {self.keep}")


@dataclass
class LogConfig:
    """Where and how often metrics are reported."""

    every_steps: int = 25
    """Read metrics back from the device and log them every this many steps (fewer host syncs)."""
    path: str | None = None
    """JSONL metrics file; None means OUT/metrics.jsonl (or no file without an output folder)."""
    progress: bool = True
    """Show a progress bar (tokens/s, FVU, L0, dead fraction) on stderr."""
    tensorboard: bool = False
    """Also log to TensorBoard (OUT/tensorboard); needs the `tensorboard` package."""
    wandb: bool = False
    """Also log to Weights & Biases; needs the `wandb` package and a configured account."""
    wandb_project: str = "sparselens"
    """W&B project name."""

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"log.every_steps must be >= 1, got {self.every_steps}")


@dataclass
class TrainConfig:
    """One training run of one dictionary on one hookpoint (or a pair, for transcoders)."""

    architecture: str = "topk"
    """Dictionary variant by registry name (topk, batchtopk, jumprelu, relu, gated, ...)."""
    n_latents: int = 4096
    """Number of latents (dictionary width)."""
    dictionary: dict[str, Any] = field(default_factory=dict)
    """Other fields of the variant's config, e.g. {"k": 32}; on the command line as JSON or
    as k=32,aux_coef=0.1."""
    hookpoint: str | None = None
    """Input activations to train on; None picks the only hookpoint the data has."""
    target_hookpoint: str | None = None
    """Reconstruction target for a transcoder; None trains an autoencoder on `hookpoint`."""
    n_tokens: int = 10_000_000
    """Training budget in tokens."""
    batch_size: int = 4096
    """Tokens per optimizer step."""
    dead_tokens: int | None = None
    """A latent is dead after this many tokens without firing; None: min(10M, n_tokens / 10)."""
    normalize_input: bool = True
    """Scale activations so that their mean norm is sqrt(width), estimated on a sample."""
    max_norm_ratio: float | None = None
    """Train without the tokens whose normalised input norm exceeds this many times the mean
    norm sqrt(width) (5 to 10 is typical). Many LMs put "massive activations" on a few tokens
    per thousand (gemma-3-270m resid.6: 12.5 times the mean), and under a batch-level
    selection (BatchTopK, Matryoshka) or a threshold (JumpReLU) each such token takes
    thousands of latents. A batch it would empty trains whole. None trains on every token.
    Needs normalize_input."""
    init_tokens: int = 16384
    """Tokens sampled (from the start of the data) for normalisation and data-dependent init."""
    seed: int = 0
    """Seed for the initial weights; the data order is seeded by the data source."""
    device: str = "cpu"
    """Device to train on (cpu, cuda, cuda:1, ...)."""
    dtype: str = "float32"
    """Parameter and compute dtype."""
    autocast: str | None = "auto"
    """Run the forward under torch.autocast in this dtype: bfloat16 (about 2x faster GEMMs on
    GPUs and CPUs with AMX or AVX-512-BF16, same FVU), float16, or float32 (no autocast; None
    too). auto: bfloat16 where the hardware has it, else float32; the choice is printed.
    Parameters and optimizer state stay in `dtype`."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        self.dictionary = parse_mapping(self.dictionary, "dictionary")
        for reserved in ("n_latents", "dtype"):
            if reserved in self.dictionary:
                raise ValueError(f"set {reserved} as its own option, not inside `dictionary`")
        for name in ("n_latents", "n_tokens", "batch_size", "init_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.autocast = normalise_autocast(self.autocast)
        if self.dead_tokens is not None and self.dead_tokens <= 0:
            raise ValueError(f"dead_tokens must be positive or None, got {self.dead_tokens}")
        if self.max_norm_ratio is not None and not (self.max_norm_ratio > 1
                                                    and self.normalize_input):
            raise ValueError(f"max_norm_ratio must be > 1 and needs normalize_input (it is a "
                             f"multiple of the normalised mean norm), got {self.max_norm_ratio}"
                             f" with normalize_input={self.normalize_input}")
        if self.n_tokens < self.batch_size:
            raise ValueError(f"n_tokens ({self.n_tokens}) is smaller than one batch "
                             f"({self.batch_size}); raise n_tokens or lower batch_size")

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole run (the last batch may be partial)."""
        return math.ceil(self.n_tokens / self.batch_size)

    @property
    def dead_window(self) -> int:
        """Tokens without firing after which a latent counts as dead."""
        if self.dead_tokens is not None:
            return self.dead_tokens
        return max(self.batch_size, min(PAPER_DEAD_TOKENS, self.n_tokens // 10))

    def peak_lr(self) -> float:
        """The configured learning rate, or the width-scaled default."""
        if self.optim.lr is not None:
            return self.optim.lr
        return REFERENCE_LR / math.sqrt(self.n_latents / REFERENCE_WIDTH)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict` output, refusing unknown keys at every level."""
        return _from_dict(cls, data)


def normalise_autocast(value: str | None) -> str:
    """The canonical autocast name (auto, bfloat16, float16 or float32) of a user's spelling."""
    canonical = AUTOCAST_CHOICES.get("none" if value is None else str(value).strip().lower())
    if canonical is None:
        raise ValueError(f"autocast must be one of {sorted(set(AUTOCAST_CHOICES.values()))} "
                         f"(or bf16, fp16, fp32, none), got {value!r}")
    return canonical


def parse_mapping(value: dict[str, Any] | str | None, what: str) -> dict[str, Any]:
    """Accept a dict, a JSON object, or ``key=value,key=value`` (values parsed as JSON)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what}: invalid JSON {text!r} ({err})") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"{what}: expected a JSON object, got {text!r}")
        return parsed
    out: dict[str, Any] = {}
    for item in re.split(r",\s*(?=[A-Za-z_]\w*\s*=)", text):  # commas that start a new key
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: expected key=value pairs separated by commas, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw.strip()
    return out


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    nested = {"optim": OptimConfig, "checkpoint": CheckpointConfig, "log": LogConfig}
    for name, value in data.items():
        if name in nested and cls is TrainConfig and isinstance(value, dict):
            kwargs[name] = _from_dict(nested[name], value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
