"""Linear probing of image-level features: do the activations (or a dictionary's codes) hold the
labels of a labelled image set linearly?

The standard protocol for self-supervised vision backbones (DINOv2 reports linear probes):
freeze the features, fit a linear classifier on the training images, report accuracy on
held-out images. Here an image's feature is the mean of its patch rows (the cache stores no CLS
token), the classifier is multinomial logistic regression (L2-regularised, standardised inputs,
full-batch L-BFGS), and the split is the cache's own held-out split, which is by whole image.
Deviation: DINOv2 probes the CLS token concatenated with the mean patch token; without CLS rows
this is the mean-patch half only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparselens.data.cache import ActivationCache
from sparselens.dictionaries.base import Dictionary


@torch.no_grad()
def image_features(cache: ActivationCache, hookpoint: str, dictionary: Dictionary | None = None,
                   batch_size: int = 4096) -> Tensor:
    """``(n_images, width)``: each image's mean patch activation, or mean dictionary code."""
    sums: Tensor | None = None
    counts = torch.zeros(cache.n_sequences)
    for batch in cache.batches(batch_size, [hookpoint], split="all", shuffle=False):
        x = batch.acts[hookpoint].float()
        if dictionary is not None:
            x = dictionary.encode(x.to(dictionary.W_dec.device)).float().cpu()
        if sums is None:
            sums = torch.zeros(cache.n_sequences, x.shape[1])
        sums.index_add_(0, batch.seq_ids, x)
        counts.index_add_(0, batch.seq_ids, torch.ones(len(x)))
    if sums is None or (counts == 0).any():
        raise ValueError("the cache has images without patch rows; harvest it completely")
    return sums / counts[:, None]


def linear_probe(features: Tensor, labels: Tensor, train: Tensor, l2: float = 1e-3,
                 max_iter: int = 200) -> dict[str, float]:
    """Fit on the rows where `train` is True, score on the others: accuracy and chance level."""
    test = ~train
    if train.sum() == 0 or test.sum() == 0:
        raise ValueError("a probe needs training and held-out images; harvest with a "
                         "held-out fraction that leaves some of each")
    mean, std = features[train].mean(0), features[train].std(0).clamp_min(1e-6)
    x = (features - mean) / std
    n_classes = int(labels.max()) + 1
    weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter,
                                  line_search_fn="strong_wolfe")

    def loss_fn() -> Tensor:
        optimizer.zero_grad()
        logits = x[train] @ weight + bias
        loss = torch.nn.functional.cross_entropy(logits, labels[train]) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(loss_fn)
    with torch.no_grad():
        predicted = (x[test] @ weight + bias).argmax(1)
    majority = torch.bincount(labels[train], minlength=n_classes).argmax()
    return {"accuracy": float((predicted == labels[test]).float().mean()),
            "majority_baseline": float((labels[test] == majority).float().mean()),
            "n_train": int(train.sum()), "n_test": int(test.sum()), "n_classes": n_classes}


def probe_cache(cache: ActivationCache, hookpoint: str, dictionary: Dictionary | None = None,
                **kwargs: Any) -> dict[str, float]:
    """Probe the labels stored in an image cache's manifest (``corpus.labels``)."""
    labels = (cache.manifest.get("corpus") or {}).get("labels")
    if not labels or any(label is None for label in labels):
        raise ValueError("this cache has no image labels; harvest a labelled image set "
                         "(e.g. builtin:digits) to probe")
    features = image_features(cache, hookpoint, dictionary)
    train = ~cache.is_heldout(torch.arange(cache.n_sequences))
    return linear_probe(features, torch.tensor(labels), train, **kwargs)


def class_counts(cache: ActivationCache) -> dict[str, list[int]]:
    """Images per class in the training and held-out splits (to judge balance)."""
    labels = torch.tensor((cache.manifest.get("corpus") or {}).get("labels") or [])
    if not len(labels):
        return {"train": [], "heldout": []}
    heldout = cache.is_heldout(torch.arange(len(labels)))
    n = int(labels.max()) + 1
    return {"train": torch.bincount(labels[~heldout], minlength=n).tolist(),
            "heldout": torch.bincount(labels[heldout], minlength=n).tolist()}


def run_image_probe(cache_path: str, hookpoint: str | None = None,
                    dictionary_path: str | None = None, device: str = "cpu",
                    l2: float = 1e-3) -> dict[str, Any]:
    """Probe an image cache's labels from mean patch activations and, given a dictionary
    folder, from its mean codes; with the class counts of both splits."""
    from sparselens.io.detect import load_any

    cache = ActivationCache.open(cache_path)
    hookpoint = cache.resolve(hookpoint or cache.hookpoints[0])
    corpus = cache.manifest.get("corpus") or {}
    result: dict[str, Any] = {"cache": str(cache_path), "source": corpus.get("source"),
                              "hookpoint": hookpoint, "classes": class_counts(cache),
                              "activations": probe_cache(cache, hookpoint, l2=l2)}
    if dictionary_path is not None:
        dictionary = load_any(dictionary_path).to(device).eval()
        result["dictionary"] = str(dictionary_path)
        result["dictionary_codes"] = probe_cache(cache, hookpoint, dictionary, l2=l2)
    return result
