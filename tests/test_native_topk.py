"""The compiled top-k (`native_topk.c`) against ``torch.topk``, and its fallbacks."""

from __future__ import annotations

import pytest
import torch

from sparselens.dictionaries import kernels, native_topk

pytestmark = pytest.mark.skipif(native_topk.load() is None,
                                reason="no C compiler: the torch path is used")


def check_exact(pre: torch.Tensor, bias: torch.Tensor, k: int, by_magnitude: bool) -> None:
    result = native_topk.row_topk(pre, bias, k, by_magnitude)
    assert result is not None
    values, indices = result
    full = pre.float() + bias
    keys = full.abs() if by_magnitude else full
    expected = keys.topk(k, dim=-1).values
    chosen = keys.gather(1, indices)
    assert torch.equal(chosen.sort(-1).values, expected.sort(-1).values)  # the k best keys
    assert torch.equal(values, full.gather(1, indices))  # signed values, bias included
    assert (indices.sort(-1).values.diff(dim=-1) > 0).all()  # distinct latents


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("by_magnitude", [False, True])
@pytest.mark.parametrize("width,k", [(9216, 32), (1000, 7), (300, 64), (64, 16), (5000, 1)])
def test_matches_torch_topk(dtype, by_magnitude, width, k) -> None:
    gen = torch.Generator().manual_seed(width + k)
    pre = torch.randn(37, width, generator=gen).to(dtype)  # bf16 rounding makes many ties
    bias = 0.3 * torch.randn(width, generator=gen)
    check_exact(pre, bias, k, by_magnitude)


def test_concentrated_rows_strided_tiles_and_infinities() -> None:
    pre = torch.randn(6, 2048) - 10
    pre[:, torch.arange(0, 2048, 64)] = torch.arange(32.0) + 1  # all the best in one group
    pre[1] = float("-inf")  # a row with nothing above -inf still returns k entries
    pre[2, 5] = float("inf")
    check_exact(pre, torch.zeros(2048), 16, False)
    wide = torch.randn(8, 3000)
    check_exact(wide[:, :2500], torch.zeros(2500), 20, False)  # rows 3000 entries apart


def test_nan_is_selected_and_returned() -> None:
    pre = torch.randn(4, 1024)
    pre[2, 17] = float("nan")
    values, indices = native_topk.row_topk(pre, torch.zeros(1024), 8)
    assert 17 in indices[2].tolist() and values[2].isnan().any()
    assert not values[[0, 1, 3]].isnan().any()


def test_unsupported_tiles_get_none() -> None:
    assert native_topk.row_topk(torch.randn(4, 64).half(), torch.zeros(64), 4) is None
    assert native_topk.row_topk(torch.randn(64, 4).T, torch.zeros(64), 4) is None  # strided
    assert native_topk.row_topk(torch.randn(4, 64), torch.zeros(64), 32) is None  # k > n / 4
    with pytest.raises(ValueError, match="bias must have shape"):
        native_topk.row_topk(torch.randn(4, 64), torch.zeros(63), 4)


def test_switched_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(native_topk.ENV_SWITCH, "0")
    assert native_topk.row_topk(torch.randn(4, 256), torch.zeros(256), 4) is None
    x, W, b = torch.randn(50, 16), torch.randn(16, 256), torch.randn(256)
    values, indices = kernels.select_topk(x, W, b, None, 8)  # the torch path
    assert torch.allclose(values, (x @ W + b).gather(1, indices))


def test_a_failed_build_warns_and_falls_back(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native_topk, "_state", {})
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.warns(RuntimeWarning, match="compiled top-k kernel is unavailable.*"
                                            "Install a C compiler"):
        assert native_topk.load() is None
    assert native_topk.row_topk(torch.randn(4, 256), torch.zeros(256), 4) is None
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built left to load later


def test_built_once_into_the_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native_topk, "_state", {})
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path))
    assert native_topk.load() is not None
    built = list(tmp_path.rglob("*.so"))
    assert len(built) == 1 and not list(tmp_path.rglob(".build.*"))
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native_topk, "_state", {})
    assert native_topk.load() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
