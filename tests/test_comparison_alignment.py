"""Two tiny models whose tokenizers differ (bytes vs bytes with a few merges), paired by text
spans: shared boundaries, pooled activations, compare and ITDA through them, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import byte_tokenizer, make_tiny_llama
from sparselens.comparison.alignment import (
    aligned_activations,
    aligned_shared_codes,
    shared_boundaries,
    token_spans,
)
from sparselens.comparison.compare import CompareOptions, compare_dictionaries
from sparselens.comparison.itda_run import ITDAOptions, compare_itda, random_jaccard
from sparselens.dictionaries.base import build
from sparselens.lens import Lens
from sparselens.models.source import LoadedModel

MERGES = [("t", "h"), ("th", "e"), ("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t"), ("a", "t")]
TEXTS = ["the cat sat on the mat", "a cat and the hat", "that cat is the best cat é",
         "the theme of the cathedral"] * 3


def merged_tokenizer():
    """Byte-level BPE like `byte_tokenizer` plus merges: 'the', ' cat', 'at' are one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<bos>", "<eos>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(base + ["th", "the", "Ġc", "Ġca", "Ġcat", "at"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")


def merged_llama() -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=265, hidden_size=24, intermediate_size=48,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    return LoadedModel(model, merged_tokenizer(), "tiny-merged")


@pytest.fixture(scope="module")
def lenses():
    return Lens(make_tiny_llama(seed=0)), Lens(merged_llama())


def test_shared_boundaries_are_the_common_token_ends() -> None:
    text = "the cat sat é"
    a, b = token_spans(merged_tokenizer(), text), token_spans(byte_tokenizer(), text)
    assert len(a.ids) < len(b.ids)  # the tokenizations differ
    bounds = shared_boundaries(a.ends, b.ends)
    # every end of the coarser tokenizer is also a byte end; 'é' (two bytes) counts once
    assert bounds.tolist() == [3, 7, 8, 9, 11, 12, 13]


def test_last_and_mean_pooling_read_the_right_tokens(lenses) -> None:
    lens_a, lens_b = lenses
    text = "the cat sat"
    last = aligned_activations(lens_a, ["resid.1"], lens_b, ["resid.1"], [text], pool="last")
    mean = aligned_activations(lens_a, ["resid.1"], lens_b, ["resid.1"], [text], pool="mean")
    assert last.offset.tolist() == [3, 7, 8, 9, 11]
    bytes_acts = lens_a.capture(text, ["resid.1"])["resid.1"][0].float()
    merged_acts = lens_b.capture(text, ["resid.1"])["resid.1"][0].float()
    # byte model: token i ends at i + 1, so the boundary at 3 is its token 2 ('e')
    assert torch.allclose(last.acts_a["resid.1"][0], bytes_acts[2], atol=1e-5)
    assert torch.allclose(mean.acts_a["resid.1"][0], bytes_acts[:3].mean(0), atol=1e-5)
    # merged model: 'the' and ' cat' are single tokens 0 and 1
    assert torch.allclose(last.acts_b["resid.1"][1], merged_acts[1], atol=1e-5)
    assert torch.allclose(mean.acts_b["resid.1"][1], merged_acts[1], atol=1e-5)
    # 'the', ' cat', ' ', 's', 'at': every merged token ends on a byte boundary
    assert last.tokens_a == 11 and last.tokens_b == 5
    assert last.coverage() == (5 / 11, 1.0)


def test_compare_two_models_with_different_tokenizers(lenses) -> None:
    lens_a, lens_b = lenses
    torch.manual_seed(0)
    a = build("topk", d_in=32, n_latents=24, k=3, hookpoint="resid.2")
    b = build("topk", d_in=24, n_latents=24, k=3, hookpoint="resid.1")
    shared, aligned = aligned_shared_codes(a, b, lens_a, lens_b, TEXTS)
    assert shared.codes_a.shape[0] == shared.codes_b.shape[0] == aligned.n > 20
    result = compare_dictionaries(a, b, shared=shared, options=CompareOptions(n_permutations=5))
    assert result.decoder is None and "width 32 and 24" in result.decoder_note
    assert result.activation is not None and result.activation.rows.size == 24
    record = result.record()
    assert record["shared_tokens"] == aligned.n
    assert record["pair_filter"]["n_matched"] == 24


def test_dictionary_against_itself_through_alignment_is_perfect(lenses) -> None:
    lens_a, _ = lenses
    torch.manual_seed(0)
    a = build("topk", d_in=32, n_latents=16, k=4, hookpoint="resid.2")
    shared, aligned = aligned_shared_codes(a, a, lens_a, lens_a, TEXTS)
    # one tokenizer: every character end is a boundary ('é', two byte tokens, counts once)
    assert aligned.n == sum(len(t) for t in TEXTS)
    result = compare_dictionaries(a, a, shared=shared, options=CompareOptions(n_permutations=0))
    fired = np.asarray(shared.codes_a.getnnz(axis=0)) > 1
    assert np.allclose(result.activation.similarity[fired[result.activation.rows]], 1.0)


def test_itda_jaccard_across_tokenizers_and_layers(lenses) -> None:
    lens_a, lens_b = lenses
    aligned = aligned_activations(lens_a, ["resid.1", "resid.1"], lens_b, ["resid.2"], TEXTS)
    result = compare_itda(aligned, ITDAOptions(k=4, threshold=0.2, batch_size=8, n_random=20))
    assert result.names == ["A:resid.1", "B:resid.2"]
    record = result.record()
    (pair,) = record["pairs"]
    assert 0 <= pair["jaccard"] <= 1 and pair["random_mean"] > 0
    same = aligned_activations(lens_a, ["resid.1"], lens_a, ["resid.1"], TEXTS)
    twin = compare_itda(same, ITDAOptions(k=4, threshold=0.2, batch_size=8, n_random=5))
    assert twin.jaccard[0, 1] == 1.0  # the same activations give the same atoms


def test_random_jaccard_matches_its_expectation() -> None:
    mean, std = random_jaccard(100, 200, 1000, 200)
    inter = 100 * 200 / 1000
    assert mean == pytest.approx(inter / (300 - inter), rel=0.1)
    assert std > 0


def test_bad_input_is_said_plainly(lenses) -> None:
    lens_a, lens_b = lenses
    wrong = build("topk", d_in=16, n_latents=8, k=2, hookpoint="resid.1")
    right = build("topk", d_in=24, n_latents=8, k=2, hookpoint="resid.1")
    with pytest.raises(ValueError, match="reads width 16 but its model gives 32"):
        aligned_shared_codes(wrong, right, lens_a, lens_b, TEXTS)
    with pytest.raises(ValueError, match="share no token boundary"):
        aligned_activations(lens_a, ["resid.1"], lens_b, ["resid.1"], [""])

    class Slow:
        def __call__(self, text, return_offsets_mapping=False):
            raise NotImplementedError

    with pytest.raises(ValueError, match="needs fast tokenizers"):
        token_spans(Slow(), "text")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, lenses):
    """Both tiny models and a dictionary of each saved to disk, for the CLI."""
    from sparselens.io.native import save_dictionary

    root = tmp_path_factory.mktemp("aligned")
    for name, lens in zip(("bytes", "merged"), lenses):
        lens.model.save_pretrained(root / name)
        lens.tokenizer.save_pretrained(root / name)
    torch.manual_seed(0)
    save_dictionary(build("topk", d_in=32, n_latents=16, k=3, hookpoint="resid.2",
                          model=str(root / "bytes")), root / "sae_a")
    save_dictionary(build("topk", d_in=24, n_latents=16, k=3, hookpoint="resid.1",
                          model=str(root / "merged")), root / "sae_b")
    (root / "texts").mkdir()
    for i, text in enumerate(TEXTS):
        (root / "texts" / f"{i}.txt").write_text(text)
    return root


def test_compare_cli_with_texts_pairs_models_by_spans(saved, tmp_path, capsys) -> None:
    import json

    from sparselens.cli.main import main

    out = tmp_path / "cmp"
    assert main(["compare", str(saved / "sae_a"), str(saved / "sae_b"), "--texts",
                 str(saved / "texts"), "--out", str(out), "--options.n-permutations", "3",
                 "--options.lan-max-token-share", "0.9"]) == 0
    record = json.loads((out / "compare.json").read_text())
    assert record["shared_split"] == "aligned" and record["shared_tokens"] > 20
    assert record["activation_matching"]["n_matched"] == 16
    filt = record["pair_filter"]
    assert filt["n_kept"] + filt["n_low_correlation"] + filt["n_token_filtered"] == 16
    assert "aligned positions" in capsys.readouterr().out


def test_itda_cli_two_models(saved, tmp_path, capsys) -> None:
    import json

    from sparselens.cli.main import main

    out = tmp_path / "itda.json"
    assert main(["itda", "--model-a", str(saved / "bytes"), "--hookpoints-a", "resid.1",
                 "resid.3", "--model-b", str(saved / "merged"), "--hookpoints-b", "resid.2",
                 "--texts", str(saved / "texts"), "--n-tokens", "200", "--options.k", "4",
                 "--options.threshold", "0.2", "--options.n-random", "10",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["sites"] == ["A:resid.1", "A:resid.3", "B:resid.2"]
    assert len(record["pairs"]) == 3 and record["models"]["B"] == str(saved / "merged")
    assert main(["itda", "--model-a", str(saved / "bytes"), "--model-b", str(saved / "merged"),
                 "--texts", str(saved / "texts")]) != 0
    assert "--model-b needs --hookpoints-b" in capsys.readouterr().err


def test_lan_filter_drops_token_detectors_and_low_correlation() -> None:
    from scipy.sparse import csr_matrix

    from sparselens.comparison.lan_filter import filter_pairs, is_semantic, token_profile

    assert is_semantic(" cat") and is_semantic("42") and not is_semantic(" ,\n")
    # rows are tokens 5,5,5,6,7,8 (token 8 is punctuation); latent 0 fires only on token 5
    # (a token detector), latent 1 on varied words, latent 2 mostly on punctuation
    tokens = np.array([5, 5, 5, 6, 7, 8, 8, 8])
    semantic = tokens != 8
    dense = np.zeros((8, 3))
    dense[[0, 1, 2], 0] = [3, 2, 1]
    dense[[2, 3, 4], 1] = [1, 2, 3]
    dense[[5, 6, 7, 3], 2] = [3, 3, 3, 1]
    profile = token_profile(csr_matrix(dense), tokens, semantic, top=4)
    assert profile.top_token_share.tolist() == [1.0, 1 / 3, 0.75]
    assert profile.nonsemantic_share.tolist() == [0.0, 0.0, 0.75]
    keep = profile.keep(0.6)
    assert keep.tolist() == [False, True, False]
    mask, counts = filter_pairs(np.array([0, 1, 2]), np.array([1, 1, 1]),
                                np.array([0.9, 0.9, 0.1]), 0.3, keep, np.ones(3, bool))
    assert mask.tolist() == [False, True, False]
    assert counts.to_dict() == {"n_matched": 3, "n_low_correlation": 1, "n_token_filtered": 1,
                                "n_kept": 1}
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        CompareOptions(lan_max_token_share=1.5)
