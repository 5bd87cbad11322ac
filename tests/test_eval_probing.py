"""Sparse probing on planted features: the informative latent is found, noise is not."""

from __future__ import annotations

import pytest
import torch

from sparselens.evaluation.probing import sparse_probing, top_k_by_mean_difference
from sparselens.evaluation.tasks import LabelledTask


def _task(n: int = 240, classes: int = 3) -> LabelledTask:
    labels = [f"c{i % classes}" for i in range(n)]
    return LabelledTask("planted", [f"text {i}" for i in range(n)], labels,
                        [f"doc{i // 4}" for i in range(n)])


def _features(task: LabelledTask, informative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = len(task.texts)
    codes = torch.rand(n, 50, generator=gen).clamp_min(0.7) - 0.7  # sparse noise latents
    acts = torch.randn(n, 16, generator=gen)
    if informative:
        for i, label in enumerate(task.labels):
            c = int(label[1:])
            codes[i, 10 + c] += 2.0          # one latent per class
            acts[i, c] += 3.0
    return codes, acts


def test_top_k_by_mean_difference() -> None:
    x = torch.zeros(4, 5)
    x[:2, 3] = 1.0
    x[2:, 1] = 0.5
    y = torch.tensor([1, 1, 0, 0])
    assert top_k_by_mean_difference(x, y, 2).tolist() == [3, 1]


def test_planted_latents_probe_perfectly() -> None:
    task = _task()
    codes, acts = _features(task, informative=True)
    result = sparse_probing(task, codes, acts, ks=(1, 5))
    assert result["sae_top_1_accuracy"] == pytest.approx(1.0)
    assert result["llm_accuracy"] > 0.95
    assert set(result["per_class"]) == {"c0", "c1", "c2"}


def test_noise_probes_at_chance() -> None:
    task = _task()
    codes, acts = _features(task, informative=False)
    result = sparse_probing(task, codes, acts, ks=(1,))
    assert 0.3 < result["sae_top_1_accuracy"] < 0.7
    assert 0.3 < result["llm_accuracy"] < 0.7


def test_bad_inputs_are_refused() -> None:
    task = _task()
    codes, acts = _features(task, informative=True)
    with pytest.raises(ValueError, match="code rows"):
        sparse_probing(task, codes[:10], acts)
    one = LabelledTask("one", ["a"] * 8, ["x"] * 8, [f"d{i}" for i in range(8)])
    with pytest.raises(ValueError, match="two labels"):
        sparse_probing(one, torch.zeros(8, 3), torch.zeros(8, 3))
    small = _task(n=24)
    with pytest.raises(ValueError, match="enough examples"):
        sparse_probing(small, *_features(small, informative=True))
