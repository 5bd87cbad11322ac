"""Sparse probing: can k latents tell a label apart as well as the whole activation can?

Gurnee et al. (2023, "Finding Neurons in a Haystack") probe with k of d units; SAEBench
(Karvonen et al., 2025) applies it to dictionary latents: per class of a labelled task, a
balanced binary task (the class against an equal number of texts from the other classes), the
k latents with the largest |mean(positive) − mean(negative)| of the mean-pooled codes on the
training split, a logistic regression on those k latents (scikit-learn, C = 1, max_iter 1000),
and its accuracy on the test split; next to it the dense baseline: a logistic regression on the
mean-pooled raw activations. Results are averaged over classes, then tasks.

Deviations from SAEBench: the dense probe is scikit-learn's L2 logistic regression on
standardised activations (SAEBench trains it with Adam on a GPU); train/test are split by
document (see tasks/); binary tasks use every positive available, not a fixed 4000/1000.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparselens.evaluation.tasks.task import LabelledTask, TaskSplit

K_VALUES = (1, 2, 5, 10, 20, 50)
MIN_TRAIN_PER_SIDE = 8
MIN_TEST_PER_SIDE = 4


def top_k_by_mean_difference(x: Tensor, y: Tensor, k: int) -> Tensor:
    """Indices of the k columns whose class means differ most (absolute difference)."""
    diff = (x[y == 1].mean(0) - x[y == 0].mean(0)).abs()
    return torch.argsort(diff, descending=True, stable=True)[:k]


def probe_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                   standardise: bool = False, max_iter: int = 1000) -> float:
    """Test accuracy of a logistic regression fitted on the training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=1.0, max_iter=max_iter)
    if standardise:
        model = make_pipeline(StandardScaler(), model)
    model.fit(x_train.double().numpy(), y_train.numpy())
    return float((model.predict(x_test.double().numpy()) == y_test.numpy()).mean())


def binary_tasks(task: LabelledTask, split: TaskSplit, seed: int = 0
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per class: (train rows, train labels, test rows, test labels), balanced one-vs-rest."""
    rng = np.random.default_rng(seed)
    labels = np.array(task.labels)
    out = {}
    for cls in task.classes:
        sides = []
        for rows in (np.array(split.train), np.array(split.test)):
            pos, neg = rows[labels[rows] == cls], rows[labels[rows] != cls]
            n = min(len(pos), len(neg))
            pos, neg = rng.permutation(pos)[:n], rng.permutation(neg)[:n]
            sides.append((np.concatenate([pos, neg]),
                          np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, np.int64)])))
        out[cls] = (sides[0][0], sides[0][1], sides[1][0], sides[1][1])
    return out


def sparse_probing(task: LabelledTask, codes: Tensor, activations: Tensor, *,
                   ks: Sequence[int] = K_VALUES, seed: int = 0) -> dict[str, Any]:
    """Sparse probes on `codes` and the dense probe on `activations` (rows = task texts)."""
    if codes.shape[0] != len(task.texts) or activations.shape[0] != len(task.texts):
        raise ValueError(f"task {task.name!r} has {len(task.texts)} texts but got "
                         f"{codes.shape[0]} code rows and {activations.shape[0]} activation rows")
    task.check()
    split = task.split(seed=seed)
    per_class, skipped = {}, {}
    for cls, (tr, ytr, te, yte) in binary_tasks(task, split, seed).items():
        if len(tr) < 2 * MIN_TRAIN_PER_SIDE or len(te) < 2 * MIN_TEST_PER_SIDE:
            skipped[cls] = (f"too few examples: {len(tr) // 2} train and {len(te) // 2} test "
                            f"per side (need {MIN_TRAIN_PER_SIDE} and {MIN_TEST_PER_SIDE})")
            continue
        y_train, y_test = torch.from_numpy(ytr), torch.from_numpy(yte)
        result = {"n_train": len(tr), "n_test": len(te),
                  "llm_accuracy": probe_accuracy(activations[tr], y_train, activations[te],
                                                 y_test, standardise=True)}
        for k in ks:
            top = top_k_by_mean_difference(codes[tr], y_train, k)
            result[f"sae_top_{k}_accuracy"] = probe_accuracy(
                codes[tr][:, top], y_train, codes[te][:, top], y_test)
        per_class[cls] = result
    if not per_class:
        raise ValueError(f"task {task.name!r}: no class has enough examples for a probe "
                         f"({skipped})")
    keys = [k for k in next(iter(per_class.values())) if k.endswith("accuracy")]
    means = {k: float(np.mean([r[k] for r in per_class.values()])) for k in keys}
    return {**means, "per_class": per_class, "skipped_classes": skipped,
            "n_texts": len(task.texts), "task_checksum": task.checksum()}


def summarise_tasks(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Accuracies averaged over tasks (each task weighs the same)."""
    keys = [k for k in next(iter(results.values())) if k.endswith("accuracy")]
    return {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
