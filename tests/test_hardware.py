"""core.hardware: "auto" dtypes follow the CPU's flags, never a guess."""

from __future__ import annotations

import pytest
import torch

from sparselens.core import hardware

CPU = torch.device("cpu")
REAL_FAST_BFLOAT16 = hardware.fast_bfloat16  # conftest patches it for every other test


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "amx_bf16", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "fma", "avx512f"}, "float32"),  # AVX-512 without BF16: emulated
    (set(), "float32"),
])
def test_auto_dtype_reads_the_cpu_flags(monkeypatch, flags, expected) -> None:
    monkeypatch.setattr(hardware, "fast_bfloat16", REAL_FAST_BFLOAT16)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert hardware.auto_dtype("auto", CPU) == expected
    assert hardware.auto_dtype("float16", CPU) == "float16"  # an explicit choice is kept
