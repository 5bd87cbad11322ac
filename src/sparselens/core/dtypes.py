"""Dtype names as users type them (``float32``, ``bf16``, ...) and their torch dtypes."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
"""Accepted names (case-insensitive) -> torch dtype."""


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """Map a dtype name (``float32``, ``bf16`` ...) to a torch dtype, with a helpful error."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(set(DTYPES))}") from None
