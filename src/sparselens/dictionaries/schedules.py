"""Schedules of loss coefficients as pure functions of training progress.

A schedule that depends only on ``StepContext.progress`` resumes exactly from a checkpoint:
the step counter is all the state it has.
"""

from __future__ import annotations

import math


def warmup_factor(progress: float, fraction: float) -> float:
    """Linear warm-up from 0 to 1 over the first `fraction` of training, then 1.

    Penalty coefficients start at zero so that the dictionary first learns to reconstruct
    (Anthropic's April 2024 update warms λ up over 5% of the steps; Gemma Scope does the same
    for the JumpReLU L0 coefficient).
    """
    if fraction <= 0.0:
        return 1.0
    return min(1.0, max(0.0, progress / fraction))


def stepped_anneal(progress: float, start_value: float, end_value: float, start: float,
                   n_steps: int) -> float:
    """A value moved from `start_value` to `end_value` in `n_steps` equal discrete steps, the
    first just after progress `start`, then one every ``(1 - start) / n_steps`` of the run, so
    the last ``1 / n_steps`` of the annealing period runs at `end_value`.

    p-annealing changes p in a few discrete steps so that the penalty coefficient can be
    rescaled at each change; with a continuous schedule every step would be a change.
    """
    if progress <= start or start >= 1.0:
        return start_value
    fraction = (progress - start) / (1.0 - start)
    level = min(n_steps - 1, math.floor(fraction * n_steps + 1e-9)) + 1
    return start_value + (end_value - start_value) * level / n_steps
