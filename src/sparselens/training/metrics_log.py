"""Training metrics: summed on the device between reports, then written to every sink at once.

Reading a scalar back from a GPU stalls the pipeline, so per-step values are accumulated as
tensors and read back together every few steps (`RunningMetrics.flush`). The sinks are a JSONL
file (always, when there is a path), a tqdm progress bar, and TensorBoard / W&B only when the
user asked for them and the package is installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from sparselens.core.atomic import atomic_write_text


class RunningMetrics:
    """Per-step scalar tensors summed on their device; averaged on `flush`."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._steps = 0

    def add(self, values: dict[str, Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            previous = self._sums.get(name)
            self._sums[name] = value if previous is None else previous + value
        self._steps += 1

    def flush(self) -> dict[str, float]:
        """Means since the last flush, read back in one host sync."""
        if not self._steps:
            return {}
        names = list(self._sums)
        means = (torch.stack([self._sums[n] for n in names]) / self._steps).tolist()
        self._sums, self._steps = {}, 0
        return dict(zip(names, means))


def require_package(module: str, flag: str) -> None:
    """Fail before training starts when an optional logger was asked for but is missing."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{flag} was requested but the `{module}` package is not installed; "
                         f"`pip install {module}` or drop {flag}")


class MetricsLog:
    """Fan a metrics record out to the JSONL file, the progress bar and optional loggers."""

    def __init__(self, path: Path | None, total_tokens: int, tokens_done: int = 0,
                 resume_step: int | None = None, progress: bool = True,
                 tensorboard_dir: Path | None = None, wandb_project: str | None = None,
                 run_config: dict[str, Any] | None = None, desc: str = "train",
                 position: int = 0) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _drop_records_after(path, resume_step)
        self._file = path.open("a") if path is not None else None
        self._bar = tqdm(total=total_tokens, initial=tokens_done, unit="tok", unit_scale=True,
                         desc=desc, position=position, dynamic_ncols=True,
                         disable=not progress)
        self._tensorboard = self._wandb = None
        if tensorboard_dir is not None:
            require_package("tensorboard", "--log.tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(tensorboard_dir))
        if wandb_project is not None:
            require_package("wandb", "--log.wandb")
            import wandb

            self._wandb = wandb.init(project=wandb_project, config=run_config or {})

    def write(self, record: dict[str, Any], new_tokens: int) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        self._bar.update(new_tokens)
        self._bar.set_postfix(fvu=f"{record.get('fvu', float('nan')):.3f}",
                              l0=f"{record.get('l0', float('nan')):.1f}",
                              dead=f"{100 * record.get('dead_fraction', 0.0):.1f}%",
                              refresh=False)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tensorboard is not None:
            for name, value in scalars.items():
                self._tensorboard.add_scalar(f"train/{name}", value, record["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["step"])

    def message(self, text: str) -> None:
        """Print without breaking the progress bar."""
        self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
        if self._file is not None:
            self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _drop_records_after(path: Path, step: int | None) -> None:
    """On resume, forget records the interrupted run wrote after its last checkpoint."""
    if not path.exists():
        return
    if step is None:
        path.unlink()
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except json.JSONDecodeError:
            break  # a torn final line from the crash
    atomic_write_text(path, "".join(kept))
