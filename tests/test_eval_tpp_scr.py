"""TPP and SCR on planted features: ablating the right latent moves the right probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparselens.evaluation.tasks import LabelledTask, topic_sentiment_task
from sparselens.evaluation.tpp_scr import scr_metrics, tpp_metrics


def _directions(n: int, d: int = 16) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0][:n]


def test_tpp_on_class_specific_latents() -> None:
    n = 300
    labels = [f"c{i % 3}" for i in range(n)]
    task = LabelledTask("planted", [str(i) for i in range(n)], labels,
                        [f"d{i // 3}" for i in range(n)])
    dirs = _directions(3)
    gen = torch.Generator().manual_seed(1)
    cls = torch.tensor([i % 3 for i in range(n)])
    codes = torch.zeros(n, 10)
    codes[torch.arange(n), cls] = 2.0
    acts = 2.0 * dirs[cls] + 0.2 * torch.randn(n, 16, generator=gen)
    decoder = torch.cat([dirs, torch.randn(7, 16, generator=gen)])
    result = tpp_metrics(task, codes, acts, decoder, ns=(1, 2))
    assert result["tpp_2_intended"] > 0.3          # the class probe falls towards chance
    assert result["tpp_2_unintended"] < result["tpp_2_intended"] / 4  # the others barely move
    assert result["tpp_2"] == pytest.approx(result["tpp_2_intended"]
                                            - result["tpp_2_unintended"])


def test_scr_removes_the_planted_spurious_latent() -> None:
    gen = torch.Generator().manual_seed(2)
    n = 800
    a = np.array([i % 2 for i in range(n)])
    b = np.array([(i // 2) % 2 for i in range(n)])
    labels = [f"{'xy'[x]},{'uv'[y]}" for x, y in zip(a, b)]
    task = LabelledTask("two", [str(i) for i in range(n)], labels, [f"d{i // 4}" for i in range(n)])
    dirs = _directions(2)
    sa, sb = torch.from_numpy(2.0 * a - 1).float(), torch.from_numpy(2.0 * b - 1).float()
    acts = sa[:, None] * dirs[0] + 3.0 * sb[:, None] * dirs[1] + 0.05 * torch.randn(n, 16,
                                                                                   generator=gen)
    codes = torch.stack([sa.clamp_min(0), (-sa).clamp_min(0), 3 * sb.clamp_min(0),
                         3 * (-sb).clamp_min(0)], dim=1)
    decoder = torch.stack([dirs[0], -dirs[0], dirs[1], -dirs[1]])
    result = scr_metrics(task, codes, acts, decoder, ns=(1, 2))
    direction = result["directions"][result["intended_attribute"]]
    assert direction["oracle_accuracy"] > 0.95
    assert direction["biased_accuracy"] < 0.8
    assert result["scr_2"] > 0.8


def test_scr_task_and_bad_labels() -> None:
    task = topic_sentiment_task()
    assert {label.count(",") for label in task.labels} == {1}
    assert len(task.balance()) == 4
    bad = LabelledTask("bad", ["a"] * 4, ["x", "y", "x", "y"], ["1", "2", "3", "4"])
    with pytest.raises(ValueError, match="attribute1,attribute2"):
        scr_metrics(bad, torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(2, 2))
