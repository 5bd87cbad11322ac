"""One batch on the training device, shared by every dictionary trained on it.

The data crosses to the device in its stored dtype (bfloat16 in a harvested cache: half the
bytes of float32), once per hookpoint, and is cast on the device, once per dtype asked for.
Dictionaries trained together on one stream (`together.fit_together`) each read the same
tensors, so a batch costs one transfer and one cast however many dictionaries consume it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch


class DeviceBatch:
    """`host` (the batch as read) plus its activations on `device`, converted on demand."""

    def __init__(self, host: ActivationBatch, device: torch.device) -> None:
        self.host = host
        self.device = device
        self._tensors: dict[tuple[str, torch.dtype | None], Tensor] = {}

    def __len__(self) -> int:
        return len(self.host)

    def acts(self, site: str, dtype: torch.dtype) -> Tensor:
        """The activations at `site` on the device in `dtype`. Callers must not modify them in
        place: the next dictionary on the stream reads the same tensor."""
        key = (site, dtype)
        if key not in self._tensors:
            moved = self._tensors.get((site, None))
            if moved is None:
                moved = self.host.acts[site].to(self.device, non_blocking=True)
                self._tensors[(site, None)] = moved
            self._tensors[key] = moved.to(dtype)
        return self._tensors[key]
