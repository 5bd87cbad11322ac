"""Targeted probe perturbation (TPP) and spurious correlation removal (SCR), as in SAEBench.

Both ask whether a dictionary isolates a concept in a few latents, by ablating latents and
watching linear probes on the raw activations (Karvonen et al., 2025, "SAEBench"; SCR after
Marks et al., 2024, "Sparse Feature Circuits"). Probes read mean-pooled activations of the
dictionary's input site, so zero-ablating latents L changes a pooled activation by exactly
−Σ_{i∈L} mean(a_i) d_i (the dictionary's error term is kept): no extra model forward is needed.

Latent selection (SAEBench): the effect of latent i on probe w for a class is
(mean code over positive texts − mean over negative texts) · (w · d_i), with the mean
difference clamped at 0 for TPP and the absolute effect for SCR; the top N latents are ablated.

- **TPP**: per class c of a multi-class task, a balanced one-vs-rest probe per class; ablate
  the top-N latents for c; TPP(N) = (drop of c's probe accuracy) − (mean drop of the other
  classes' probes). High = the latents are specific to c.
- **SCR**: a task with two binary attributes (topic and sentiment of template sentences). A
  *biased* probe is trained where the attributes are perfectly correlated; ablating the top-N
  latents for the spurious attribute should make it follow the intended one:
  SCR(N) = (A_ablated − A_biased) / (A_oracle − A_biased), where accuracies are on test data
  balanced for the intended attribute and A_oracle is a probe trained on that attribute alone.
  As SAEBench, both directions are computed and the reported one is the direction where the
  biased probe starts out worse.

Deviations: probes are scikit-learn L2 logistic regressions on centred activations scaled by
one global factor (SAEBench: Adam on a GPU); sizes are smaller (our tasks, see tasks/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparselens.evaluation.probing import binary_tasks
from sparselens.evaluation.tasks.task import LabelledTask

N_VALUES = (2, 5, 10, 20, 50, 100, 500)
MIN_DENOMINATOR = 0.02


@dataclass
class LinearProbe:
    """A logistic probe in raw activation units: ``score = x @ weight + bias``."""

    weight: Tensor
    bias: float

    @classmethod
    def fit(cls, x: Tensor, y: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression

        # Centred and scaled by one global number, so the L2 penalty stays isotropic in
        # activation space (per-dimension standardising would tilt the probe's direction).
        mean = x.double().mean(0)
        std = float((x.double() - mean).std().clamp_min(1e-8))
        model = LogisticRegression(C=1.0, max_iter=1000)
        model.fit(((x.double() - mean) / std).numpy(), y)
        w = torch.from_numpy(model.coef_[0]) / std
        return cls(w.float(), float(model.intercept_[0] - float(mean @ w)))

    def accuracy(self, x: Tensor, y: np.ndarray) -> float:
        return float(((x.double() @ self.weight.double() + self.bias > 0).numpy() == y).mean())


def latent_effects(codes: Tensor, y: np.ndarray, probe: LinearProbe, decoder: Tensor, *,
                   absolute: bool) -> Tensor:
    """SAEBench's per-latent effect on a probe (see the module docstring)."""
    positive = torch.from_numpy(y == 1)
    diff = codes[positive].mean(0) - codes[~positive].mean(0)
    if not absolute:
        diff = diff.clamp_min(0.0)
    effect = diff * (decoder.float() @ probe.weight)
    return effect.abs() if absolute else effect


def top_latents(effects: Tensor, n: int) -> Tensor:
    """The top `n` latents by effect, among those with a non-zero effect."""
    k = min(n, int((effects != 0).sum()))
    return torch.topk(effects, k).indices if k else torch.zeros(0, dtype=torch.long)


def ablate(activations: Tensor, codes: Tensor, decoder: Tensor, latents: Tensor) -> Tensor:
    """Pooled activations with `latents` zero-ablated (their decoded contribution removed)."""
    return activations - codes[:, latents] @ decoder[latents].float()


def tpp_metrics(task: LabelledTask, codes: Tensor, activations: Tensor, decoder: Tensor, *,
                ns: Sequence[int] = N_VALUES, seed: int = 0) -> dict[str, Any]:
    """TPP on a multi-class task; rows of `codes`/`activations` are the task's texts."""
    task.check()
    binaries = binary_tasks(task, task.split(seed=seed), seed)
    probes, tests, effects = {}, {}, {}
    for cls, (tr, ytr, te, yte) in binaries.items():
        if len(tr) < 16 or len(te) < 8:
            continue
        probes[cls] = LinearProbe.fit(activations[tr], ytr)
        tests[cls] = (te, yte)
        effects[cls] = latent_effects(codes[tr], ytr, probes[cls], decoder, absolute=False)
    if len(probes) < 2:
        raise ValueError(f"task {task.name!r}: TPP needs two classes with enough examples")
    clean = {c: probes[c].accuracy(activations[te], y) for c, (te, y) in tests.items()}
    per_class: dict[str, dict[str, float]] = {}
    for cls in probes:
        for n in ns:
            chosen = top_latents(effects[cls], n)
            drop = {}
            for other, (te, y) in tests.items():
                ablated = ablate(activations[te], codes[te], decoder, chosen)
                drop[other] = clean[other] - probes[other].accuracy(ablated, y)
            unintended = float(np.mean([d for o, d in drop.items() if o != cls]))
            per_class.setdefault(cls, {}).update({
                f"tpp_{n}": drop[cls] - unintended, f"tpp_{n}_intended": drop[cls],
                f"tpp_{n}_unintended": unintended})
    keys = next(iter(per_class.values())).keys()
    means = {k: float(np.mean([r[k] for r in per_class.values()])) for k in keys}
    return {**means, "clean_accuracy": clean, "per_class": per_class}


def _attributes(task: LabelledTask) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    pairs = [label.split(",") for label in task.labels]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"task {task.name!r}: SCR labels must be 'attribute1,attribute2'")
    values = [sorted({p[i] for p in pairs}) for i in (0, 1)]
    if any(len(v) != 2 for v in values):
        raise ValueError(f"task {task.name!r}: SCR needs two binary attributes, got {values}")
    a = np.array([values[0].index(p[0]) for p in pairs])
    b = np.array([values[1].index(p[1]) for p in pairs])
    return a, b, values


def _balanced(rows: np.ndarray, target: np.ndarray, other: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Rows with equal counts in each of the four (target, other) cells."""
    cells = [rows[(target[rows] == t) & (other[rows] == o)] for t in (0, 1) for o in (0, 1)]
    n = min(len(c) for c in cells)
    return np.sort(np.concatenate([rng.permutation(c)[:n] for c in cells]))


def scr_metrics(task: LabelledTask, codes: Tensor, activations: Tensor, decoder: Tensor, *,
                ns: Sequence[int] = N_VALUES, seed: int = 0) -> dict[str, Any]:
    """SCR on a task whose labels are ``"attribute1,attribute2"`` (two binary attributes)."""
    a, b, values = _attributes(task)
    split = task.split(seed=seed)
    rng = np.random.default_rng(seed)
    train, test = np.array(split.train), np.array(split.test)
    biased_rows = train[a[train] == b[train]]  # the attributes agree: perfectly correlated
    if len(biased_rows) < 16 or len(np.unique(a[biased_rows])) < 2:
        raise ValueError(f"task {task.name!r}: too few training texts where the attributes agree")
    biased = LinearProbe.fit(activations[biased_rows], a[biased_rows])
    attrs = {"attribute1": a, "attribute2": b}
    probes, test_rows, train_rows = {}, {}, {}
    for name, target in attrs.items():
        other = b if name == "attribute1" else a
        train_rows[name] = _balanced(train, target, other, rng)
        test_rows[name] = _balanced(test, target, other, rng)
        if len(train_rows[name]) < 16 or len(test_rows[name]) < 8:
            raise ValueError(f"task {task.name!r}: too few balanced examples for SCR")
        probes[name] = LinearProbe.fit(activations[train_rows[name]], target[train_rows[name]])
    directions = {}
    for intended, spurious in (("attribute1", "attribute2"), ("attribute2", "attribute1")):
        target = attrs[intended]
        te = test_rows[intended]
        # The biased probe predicts attribute1; on attribute2 data its labels are attribute2's.
        original = biased.accuracy(activations[te], target[te])
        oracle = probes[intended].accuracy(activations[te], target[te])
        tr = train_rows[spurious]
        effects = latent_effects(codes[tr], attrs[spurious][tr], probes[spurious], decoder,
                                 absolute=True)
        result: dict[str, Any] = {"biased_accuracy": original, "oracle_accuracy": oracle}
        if abs(oracle - original) < MIN_DENOMINATOR:
            result["skipped"] = (f"the biased probe is as accurate as the oracle ({original:.3f} "
                                 f"vs {oracle:.3f}): SCR's denominator vanishes")
        else:
            for n in ns:
                ablated = ablate(activations[te], codes[te], decoder, top_latents(effects, n))
                changed = biased.accuracy(ablated, target[te])
                result[f"scr_{n}"] = (changed - original) / (oracle - original)
        directions[intended] = result
    # SAEBench reports the direction in which the biased probe starts out worse.
    worse = min(directions, key=lambda k: directions[k]["biased_accuracy"])
    chosen = directions[worse]
    out: dict[str, Any] = {k: v for k, v in chosen.items() if k.startswith("scr_")}
    if "skipped" in chosen:
        out["skipped"] = chosen["skipped"]
    return {**out, "intended_attribute": worse, "attribute_values": values,
            "directions": directions}
