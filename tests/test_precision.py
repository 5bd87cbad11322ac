"""The trainer's default precision: bf16 autocast where the hardware has fast bf16, float32
elsewhere, always said out loud, and float32 one option away."""

from __future__ import annotations

import pytest
import torch

from sparselens.core import hardware
from sparselens.training import LogConfig, Trainer, precision
from sparselens.training.precision import fast_bfloat16, resolve_autocast
from test_trainer import config, synthetic_data

CPU = torch.device("cpu")


@pytest.mark.parametrize(("flags", "expected"), [
    ({"fpu", "avx512f", "amx_bf16", "amx_tile"}, "this CPU has amx_bf16"),
    ({"fpu", "avx512f", "avx512_bf16"}, "this CPU has avx512_bf16"),
    ({"fpu", "avx2", "avx512f"}, None),
])
def test_cpu_detection_reads_the_cpu_flags(monkeypatch, flags, expected) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert fast_bfloat16(CPU) == expected


def test_cuda_detection_asks_torch(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert fast_bfloat16(torch.device("cuda")) == "Some GPU supports bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert fast_bfloat16(torch.device("cuda")) is None


def test_auto_resolves_by_hardware_and_explicit_choices_stay(monkeypatch) -> None:
    monkeypatch.setattr(precision, "fast_bfloat16", lambda device: "this CPU has amx_bf16")
    dtype, note = resolve_autocast("auto", CPU)
    assert dtype == "bfloat16" and "amx_bf16" in note and "--autocast float32" in note
    assert resolve_autocast("float32", CPU) == ("float32", None)
    monkeypatch.setattr(precision, "fast_bfloat16", lambda device: None)
    dtype, note = resolve_autocast("auto", CPU)
    assert dtype == "float32" and "--autocast bfloat16" in note


def test_the_trainer_trains_and_checkpoints_the_resolved_choice(monkeypatch, tmp_path,
                                                                capsys) -> None:
    monkeypatch.setattr(precision, "fast_bfloat16", lambda device: "this CPU has amx_bf16")
    cfg = config(steps=4, log=LogConfig(every_steps=2, progress=True))
    assert cfg.autocast == "auto"
    trainer = Trainer(cfg, synthetic_data(), tmp_path)
    assert trainer.cfg.autocast == "bfloat16"
    seen = []
    original = trainer.dictionary.training_loss

    def spy(x, target, ctx):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return original(x, target, ctx)

    trainer.dictionary.training_loss = spy  # type: ignore[method-assign]
    trainer.fit()
    assert seen == [torch.bfloat16] * 4
    assert "training under bfloat16 autocast (this CPU has amx_bf16)" in capsys.readouterr().err
    resumed = Trainer.resume(tmp_path, synthetic_data())
    assert resumed.cfg.autocast == "bfloat16" and resumed.precision_note is None
    plain = Trainer(config(steps=4, autocast="float32"), synthetic_data())
    assert plain.cfg.autocast == "float32" and plain.precision_note is None
