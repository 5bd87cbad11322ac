"""Learning-rate schedules as pure functions of the step.

A schedule with no state of its own resumes exactly: the step counter saved in the checkpoint
is all it needs, so there is no scheduler object to save or to get out of sync.
"""

from __future__ import annotations

import math

from sparselens.training.config import OptimConfig


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Linear warm-up over the first ``warmup`` fraction of the run (starting above 0, so the
    first step already learns), flat in the middle, then a decay to 0 over the last
    ``decay_fraction``: linear, cosine, or none (``constant``). Steps past the planned end
    (a data source with short batches takes more steps) keep the final, smallest factor.
    """
    total = max(1, total_steps)
    step = min(max(step, 0), total - 1)
    warmup_steps = round(cfg.warmup * total)
    decay_steps = 0 if cfg.decay == "constant" else round(cfg.decay_fraction * total)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = total - decay_steps
    if decay_steps == 0 or step < decay_start:
        return 1.0
    remaining = (total - step) / decay_steps  # 1 when the decay starts, 1/decay_steps at the end
    if cfg.decay == "linear":
        return remaining
    return 0.5 * (1.0 - math.cos(math.pi * remaining))
