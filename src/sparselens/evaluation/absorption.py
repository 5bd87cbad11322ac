"""Feature absorption on the first-letter task (Chanin et al. 2024, "A is for Absorption").

A dictionary *absorbs* a feature when a latent that should fire for it ("starts with S") stays
silent on some inputs because a more specific latent ("snake") has taken the direction in.
The task, following the paper and SAEBench's implementation of it:

1. Words: single tokens of the model's own vocabulary that are a word start followed by ASCII
   letters only; label = first letter. Split into train/test words.
2. Prompt: in-context examples ``"{word} has the first letter: {LETTER}"`` joined by newlines,
   then ``"{word} has the first letter:"``; activations are read at the word's token.
3. A linear probe per letter (one-vs-rest logistic, the "ground truth" direction) on the raw
   activations of the training words.
4. k-sparse probes on latents: an L1-regularised multi-probe on the codes ranks latents per
   letter (largest positive weights); for k = 1..max_k a balanced logistic regression on the
   top k latents; the *main latents* of a letter are the top k for the last k whose test F1
   improved on the previous by more than ``f1_jump`` (0.03). ``num_split_features`` counts them
   (feature splitting: more than one latent shares the letter).
5. On test words of the letter that the probe gets right (``probe true positives``) but the
   k-sparse probe misses, with p̂ the unit probe direction, cos_i = cos(d_i, p̂) and
   proj_i = a_i · cos_i (a latent's projection onto the probe):
   - absorption fraction: with P = x · p̂, M = Σ_main proj_i and A = the largest three proj_i
     among other latents with cos_i ≥ 0.1 and proj_i > 0: 0 if M ≥ P or A / P < 0.4; 1 if
     M ≤ 0; else min(A, P − M) / (min(A, P − M) + M);
   - full absorption: no main latent fires, the top-projecting latent has cos ≥ 0.025, P ≥ 0
     and that latent carries at least 0.4 of P.
   Per letter, both are summed over those words and divided by the number of probe true
   positives; the results are their means over letters.

Deviations (stated in docs/evaluation.md): probes are fitted with full-batch L-BFGS/Adam on
the CPU rather than SAEBench's minibatch Adam; the absorption step reuses the activations of
the probing prompts (SAEBench rebuilds prompts with freshly shuffled examples); the vocabulary
is subsampled to ``max_words_per_letter`` per letter to fit a CPU budget.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

LETTERS = string.ascii_lowercase
TEMPLATE = "{word} has the first letter:"


@dataclass(frozen=True)
class AbsorptionConfig:
    """Sizes and thresholds of the absorption metric (thresholds: the paper's/SAEBench's)."""

    max_words_per_letter: int = 200
    """Vocabulary words sampled per first letter (all of them for rarer letters). 80 left
    4-15 probe true positives per letter on gemma-3-270m (16 test words a letter at probe
    F1 0.65), too few for a rate; the vocabulary has 147 (x) to 8434 (s) word tokens."""
    icl_examples: int = 6
    test_fraction: float = 0.2
    max_k: int = 10
    f1_jump: float = 0.03
    l1_decay: float = 0.01
    full_absorption_cos: float = 0.025
    fraction_cos: float = 0.1
    projection_proportion: float = 0.4
    max_absorbers: int = 3
    min_true_positives: int = 2
    seed: int = 0


@dataclass
class LetterWords:
    """The first-letter dataset: token ids of the prompts and where the word sits."""

    words: list[str]
    labels: np.ndarray
    sequences: list[list[int]]
    positions: list[int]
    train: np.ndarray
    test: np.ndarray


def vocabulary_words(tokenizer: Any) -> dict[str, int]:
    """Word-start tokens made of ASCII letters only (at least two), word -> token id."""
    out = {}
    for token, index in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if not text.startswith(" "):
            continue
        word = text[1:]
        if len(word) >= 2 and word.isascii() and word.isalpha():
            out.setdefault(word, index)
    return dict(sorted(out.items()))


def first_letter_dataset(tokenizer: Any, cfg: AbsorptionConfig) -> LetterWords:
    """Subsample words per letter, build in-context prompts, split words into train/test."""
    rng = np.random.default_rng(cfg.seed)
    vocab = vocabulary_words(tokenizer)
    by_letter: dict[int, list[str]] = {}
    for word in vocab:
        letter = word[0].lower()
        by_letter.setdefault(LETTERS.index(letter), []).append(word)
    missing = [LETTERS[i] for i in range(26) if len(by_letter.get(i, [])) < 5]
    if missing:
        raise ValueError(f"the tokenizer has fewer than 5 word tokens for letters {missing}: "
                         "the first-letter task needs a vocabulary of English word pieces")
    words, labels = [], []
    for letter in range(26):
        pool = by_letter[letter]
        for i in rng.permutation(len(pool))[:cfg.max_words_per_letter]:
            words.append(pool[int(i)])
            labels.append(letter)
    bos = tokenizer("")["input_ids"]
    pool = np.array(list(vocab))
    sequences, positions = [], []
    for word in words:
        examples = [w for w in rng.choice(pool, cfg.icl_examples + 1) if w != word]
        shots = "\n".join(f"{TEMPLATE.format(word=' ' + w)} {w[0].upper()}"
                          for w in examples[:cfg.icl_examples])
        prefix = bos + tokenizer(shots + "\n", add_special_tokens=False)["input_ids"]
        # The prompt ends in " has the first letter:", but the activation is read at the
        # word's token and the model is causal: the suffix cannot change it, so it is not run.
        sequences.append(prefix + [vocab[word]])
        positions.append(len(prefix))
    order = rng.permutation(len(words))
    n_test = int(round(cfg.test_fraction * len(words)))
    return LetterWords(words, np.array(labels), sequences, positions,
                       np.sort(order[n_test:]), np.sort(order[:n_test]))


def train_multi_probe(x: Tensor, y: Tensor, *, l1: float = 0.0, l2: float = 1e-4,
                      steps: int = 300, lr: float = 0.01) -> tuple[Tensor, Tensor]:
    """One-vs-rest logistic probes ``(n_classes, d)`` + biases, full-batch Adam on BCE."""
    x = x.float()
    targets = torch.nn.functional.one_hot(y.long(), 26).float()
    weight = torch.zeros(26, x.shape[1], requires_grad=True)
    bias = torch.zeros(26, requires_grad=True)
    scale = x.std().clamp_min(1e-6)
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            logits = (x / scale) @ weight.T + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
            loss = loss + l1 * weight.abs().sum(1).mean() + l2 * weight.pow(2).sum(1).mean()
            loss.backward()
            optimiser.step()
    return (weight / scale).detach(), bias.detach()


def _f1(y: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((y & predicted).sum())
    return 0.0 if tp == 0 else 2 * tp / float(y.sum() + predicted.sum())


def main_latents(codes: Tensor, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 cfg: AbsorptionConfig) -> tuple[dict[int, list[int]], dict[int, np.ndarray]]:
    """Per letter: the main (split) latents and the k-sparse probe's test scores for them."""
    from sklearn.linear_model import LogisticRegression

    ranking, _ = train_multi_probe(codes[train], torch.from_numpy(labels[train]),
                                   l1=cfg.l1_decay, l2=1e-6)
    chosen, scores = {}, {}
    for letter in range(26):
        y_train, y_test = labels[train] == letter, labels[test] == letter
        best, prev = None, -100.0
        for k in range(1, cfg.max_k + 1):
            feats = ranking[letter].topk(k).indices.numpy()
            probe = LogisticRegression(max_iter=500, class_weight="balanced")
            probe.fit(codes[train][:, feats].double().numpy(), y_train)
            score = probe.decision_function(codes[test][:, feats].double().numpy())
            f1 = _f1(y_test, score > 0)
            if f1 > prev + cfg.f1_jump:
                prev, best = f1, (feats.tolist(), score)
            else:
                break
        assert best is not None  # k = 1 always beats -100
        chosen[letter], scores[letter] = best
    return chosen, scores


def word_absorption(codes: Tensor, act: Tensor, probe: Tensor, decoder: Tensor,
                    main: list[int], cfg: AbsorptionConfig) -> tuple[float, bool]:
    """(absorption fraction, full absorption) of one word (see the module docstring)."""
    direction = probe / probe.norm()
    cos = torch.nn.functional.cosine_similarity(decoder.float(), direction[None], dim=-1)
    proj = codes * cos
    total = float(act @ direction)
    main_proj = float(proj[main].sum())
    others = torch.ones_like(proj, dtype=torch.bool)
    others[main] = False
    others &= (cos >= cfg.fraction_cos) & (proj > 0)
    absorbers = proj[others].topk(min(cfg.max_absorbers, int(others.sum()))).values
    absorbed = float(absorbers.sum())
    if main_proj >= total or absorbed / total < cfg.projection_proportion:
        fraction = 0.0
    elif main_proj <= 0.0:
        fraction = 1.0
    else:
        part = min(absorbed, total - main_proj)
        fraction = float(np.clip(part / (part + main_proj), 0.0, 1.0))
    top = int(proj.argmax())
    full = (bool((codes[main].abs() < 1e-8).all()) and float(cos[top]) >= cfg.full_absorption_cos
            and total >= 0 and float(proj[top]) / total >= cfg.projection_proportion)
    return fraction, full


@dataclass
class AbsorptionInputs:
    """What the absorption step needs from the probes: per letter, the probe, the main
    latents and the test rows (indices into the words) the probe gets right."""

    probe_weight: Tensor
    probe_f1: float
    main: dict[int, list[int]]
    true_positives: dict[int, np.ndarray]
    missed: dict[int, np.ndarray]


def absorption_inputs(data: LetterWords, codes: Tensor, activations: Tensor,
                      cfg: AbsorptionConfig) -> AbsorptionInputs:
    """Letter probes, main latents, probe true positives and the k-sparse probe's misses."""
    labels, train, test = data.labels, data.train, data.test
    probe_w, probe_b = train_multi_probe(activations[train], torch.from_numpy(labels[train]))
    probe_scores = (activations[test] @ probe_w.T + probe_b).numpy()
    probe_f1 = float(np.mean([_f1(labels[test] == i, probe_scores[:, i] > 0)
                              for i in range(26)]))
    main, sparse_scores = main_latents(codes, labels, train, test, cfg)
    true_pos, missed = {}, {}
    for letter in range(26):
        rows = np.flatnonzero((labels[test] == letter) & (probe_scores[:, letter] > 0))
        true_pos[letter] = test[rows]
        missed[letter] = test[rows[sparse_scores[letter][rows] <= 0]]
    return AbsorptionInputs(probe_w, probe_f1, main, true_pos, missed)


def absorption_metrics(data: LetterWords, codes: Tensor, activations: Tensor, decoder: Tensor,
                       cfg: AbsorptionConfig = AbsorptionConfig()) -> dict[str, Any]:
    """The absorption metric from codes and activations at the word position of each prompt."""
    if codes.shape[0] != len(data.words) or codes.shape[1] != decoder.shape[0]:
        raise ValueError(f"codes {tuple(codes.shape)} do not match {len(data.words)} words and "
                         f"a decoder of {decoder.shape[0]} latents")
    inputs = absorption_inputs(data, codes, activations, cfg)
    per_letter, skipped = {}, {}
    for letter in range(26):
        n_true = len(inputs.true_positives[letter])
        if n_true < cfg.min_true_positives:
            skipped[LETTERS[letter]] = (f"{n_true} probe true positives (need "
                                        f"{cfg.min_true_positives})")
            continue
        fractions, fulls = [], 0
        for index in inputs.missed[letter]:
            fraction, full = word_absorption(codes[index], activations[index],
                                             inputs.probe_weight[letter], decoder,
                                             inputs.main[letter], cfg)
            fractions.append(fraction)
            fulls += full
        per_letter[LETTERS[letter]] = {
            "mean_absorption_fraction": sum(fractions) / n_true,
            "full_absorption_rate": fulls / n_true, "num_full_absorption": fulls,
            "num_probe_true_positives": n_true,
            "num_split_features": len(inputs.main[letter]),
            "main_latents": inputs.main[letter]}
    if not per_letter:
        raise ValueError(f"no letter has enough probe true positives: {skipped}")
    mean = {key: float(np.mean([r[key] for r in per_letter.values()]))
            for key in ("mean_absorption_fraction", "full_absorption_rate", "num_split_features")}
    return {**mean, "probe_f1": inputs.probe_f1, "per_letter": per_letter,
            "skipped_letters": skipped, "n_words": len(data.words),
            "n_test_words": len(data.test)}
