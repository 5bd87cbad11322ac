"""Absorption on a planted first-letter dictionary: absorbed words are found, others are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparselens.evaluation.absorption import (
    AbsorptionConfig,
    LetterWords,
    absorption_metrics,
    first_letter_dataset,
    word_absorption,
)


def _planted(words_per_letter: int = 40, absorbed_share: float = 0.2):
    gen = torch.Generator().manual_seed(0)
    d = 64
    letter_dirs = torch.linalg.qr(torch.randn(d, d, generator=gen))[0][:, :26].T  # orthonormal
    labels = np.repeat(np.arange(26), words_per_letter)
    n = len(labels)
    acts = 5.0 * letter_dirs[torch.from_numpy(labels)] + 0.3 * torch.randn(n, d, generator=gen)
    decoder = [letter_dirs[i] for i in range(26)]
    codes = torch.zeros(n, 26 + n)
    absorbed = np.zeros(n, dtype=bool)
    for i in range(n):
        if labels[i] == 0 and (i % words_per_letter) < absorbed_share * words_per_letter:
            word_dir = torch.randn(d, generator=gen)
            word_dir -= (word_dir @ letter_dirs.T) @ letter_dirs  # orthogonal to every letter
            word_dir /= word_dir.norm()
            acts[i] += 5.0 * word_dir
            decoder.append((letter_dirs[0] + word_dir) / 2**0.5)
            codes[i, len(decoder) - 1] = 5.0 * 2**0.5
            absorbed[i] = True
        else:
            decoder.append(torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0))
            codes[i, labels[i]] = 5.0
    order = np.random.default_rng(0).permutation(n)
    test, train = np.sort(order[: n // 4]), np.sort(order[n // 4:])
    data = LetterWords([f"w{i}" for i in range(n)], labels, [[0]] * n, [0] * n, train, test)
    return data, codes, acts, torch.stack(decoder), absorbed


def test_planted_absorption_is_measured() -> None:
    data, codes, acts, decoder, absorbed = _planted()
    result = absorption_metrics(data, codes, acts, decoder)
    a = result["per_letter"]["a"]
    test_a = data.test[data.labels[data.test] == 0]
    expected = absorbed[test_a].sum() / len(test_a)
    assert a["main_latents"] == [0]
    assert a["mean_absorption_fraction"] == pytest.approx(expected, abs=0.05)
    assert a["full_absorption_rate"] == pytest.approx(expected, abs=0.05)
    others = [r["mean_absorption_fraction"] for k, r in result["per_letter"].items() if k != "a"]
    assert max(others) == 0.0
    assert result["probe_f1"] > 0.95
    assert all(r["num_split_features"] == 1 for r in result["per_letter"].values())


def test_word_absorption_cases() -> None:
    cfg = AbsorptionConfig()
    probe = torch.tensor([1.0, 0.0, 0.0])
    decoder = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    act = torch.tensor([2.0, 1.5, 0.0])
    # main latent carries everything: no absorption
    assert word_absorption(torch.tensor([2.0, 0.0, 0.0]), act, probe, decoder, [0], cfg) == (
        0.0, False)
    # main silent, latent 1 projects 2.5 * 0.8 = 2 of P = 2: full absorption
    assert word_absorption(torch.tensor([0.0, 2.5, 0.0]), act, probe, decoder, [0], cfg) == (
        1.0, True)
    # partial: main projects 1, absorber 1.6 -> min(1.6, 2 - 1) / (1 + 1) = 0.5
    fraction, full = word_absorption(torch.tensor([1.0, 2.0, 0.0]), act, probe, decoder, [0],
                                     cfg)
    assert fraction == pytest.approx(0.5) and not full


def test_vocabulary_without_words_is_refused() -> None:
    from tests.conftest import byte_tokenizer

    with pytest.raises(ValueError, match="word tokens"):
        first_letter_dataset(byte_tokenizer(), AbsorptionConfig())


def test_position_features_keep_the_input_order(tiny_llama) -> None:
    from sparselens.dictionaries import build
    from sparselens.evaluation.features import position_features
    from sparselens.lens import Lens

    lens = Lens(tiny_llama)
    d_in = tiny_llama.model.config.hidden_size
    lens.attach("sae", build("relu", d_in=d_in, n_latents=8, hookpoint="resid.1"))
    gen = torch.Generator().manual_seed(0)
    sequences = [[1, *torch.randint(3, 250, (n,), generator=gen).tolist()]
                 for n in (9, 3, 6, 2, 7)]  # lengths out of order: batches are sorted
    positions = [4, 1, 5, 2, 3]
    batched = position_features(lens, "sae", sequences, positions, batch_size=2,
                                progress=False)
    for i, (seq, pos) in enumerate(zip(sequences, positions)):
        alone = position_features(lens, "sae", [seq], [pos], batch_size=1, progress=False)
        torch.testing.assert_close(batched.activations[i], alone.activations[0],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.codes[i], alone.codes[0], atol=1e-5, rtol=1e-5)
