"""The feature API: encode, splice, edits (also during generate with the KV cache), attribution
leaves and the errors a user can run into, on a tiny Llama built in code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import sparselens
from sparselens.dictionaries import build
from sparselens.lens import (
    AblateLatents,
    AddLatent,
    AddVector,
    ClampLatent,
    Lens,
    SetActivation,
    SparseCodes,
    ZeroAblate,
)
from sparselens.models.hookpoints import capture, resolve

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["hello world, this is a test", "another line"]


def sae(hookpoint: str = "resid.1", d: int = 32, seed: int = 0, **kw):
    torch.manual_seed(seed)
    dictionary = build("topk", d_in=d, n_latents=96, k=6, hookpoint=hookpoint, **kw)
    with torch.no_grad():
        dictionary.b_enc.add_(0.05)  # so that some latents fire on every token
    return dictionary


@pytest.fixture()
def lens(tiny_llama) -> Lens:
    return Lens(tiny_llama, {"sae": sae()})


def test_sparse_codes_round_trip_and_views() -> None:
    dense = torch.zeros(2, 3, 10)
    dense[0, 1, 4] = 2.0
    dense[1, 2, [1, 7]] = torch.tensor([-1.0, 0.5])
    codes = SparseCodes.from_dense(dense)
    assert codes.values.shape == (6, 2)
    assert torch.equal(codes.dense(), dense)
    assert torch.equal(codes.latent(7), dense[..., 7])
    assert codes.l0().tolist() == [[0, 1, 0], [0, 0, 2]]
    picked = codes.select(dense.abs().sum(-1) > 0)
    assert picked.shape == (2,) and torch.equal(picked.dense(), dense[dense.abs().sum(-1) > 0])
    joined = SparseCodes.cat([picked, SparseCodes.from_dense(torch.zeros(3, 10))])
    assert joined.shape == (5,) and joined.dense()[:2].abs().sum() == 3.5
    with pytest.raises(IndexError, match="out of range"):
        codes.latent(10)


def test_encode_matches_the_dictionary_on_captured_activations(lens, tiny_llama) -> None:
    enc = lens.encode(TEXTS)
    hp = resolve(tiny_llama.model, "resid.1")[0]
    acts = capture(tiny_llama.model, [hp], input_ids=enc.tokens.ids,
                   attention_mask=enc.tokens.attention_mask)[hp]
    want = lens.dictionaries["sae"].encode(acts) * (~enc.tokens.special).unsqueeze(-1)
    got = enc.codes["sae"].dense()
    assert torch.allclose(got, want)
    assert got.shape == (*enc.tokens.shape, 96)
    assert (enc.codes["sae"].l0()[~enc.tokens.special] == 6).all()
    assert (enc.codes["sae"].l0()[enc.tokens.special] == 0).all()  # padding of the short text


def test_encode_stops_after_the_deepest_site(lens, tiny_llama) -> None:
    last = tiny_llama.model.model.layers[3]
    calls = []
    handle = last.register_forward_hook(lambda *_: calls.append(1))
    try:
        lens.encode("stop early")
    finally:
        handle.remove()
    assert calls == []


def test_an_empty_edit_reproduces_the_model_bit_for_bit(lens, tiny_llama) -> None:
    tokens = lens.tokenize(TEXTS)
    clean = tiny_llama.model(input_ids=tokens.ids, attention_mask=tokens.attention_mask).logits
    assert torch.equal(lens.forward(tokens).logits, clean)
    with lens.edit():
        assert torch.equal(lens.forward(tokens).logits, clean)
    # an edit that changes no code: ablating a latent that never fires
    enc = lens.encode(tokens)
    silent = next(j for j in range(96) if not (enc.codes["sae"].latent(j) != 0).any())
    assert torch.equal(lens.forward(tokens, edits=[AblateLatents("sae", [silent])]).logits, clean)


def test_add_latent_adds_the_decoder_row_at_the_chosen_positions(lens) -> None:
    tokens = lens.tokenize("abcdefgh")
    clean = lens.encode(tokens).activations["sae"]
    row = lens.dictionaries["sae"].W_dec[5]
    with lens.edit(AddLatent("sae", latent=5, coef=3.0, positions=[2, 4])):
        edited = lens.encode(tokens).activations["sae"]
    diff = edited - clean
    assert torch.allclose(diff[0, 2], 3.0 * row, atol=1e-6)
    assert torch.allclose(diff[0, 4], 3.0 * row, atol=1e-6)
    assert diff[0, [0, 1, 3, 5, 6, 7]].abs().max() == 0


def test_clamp_and_ablate_change_only_that_latent(lens) -> None:
    tokens = lens.tokenize("the quick brown fox")
    enc = lens.encode(tokens)
    latent = int(enc.codes["sae"].indices[0, 0])
    for edit, value in ((ClampLatent("sae", latent, 7.5), 7.5),
                        (AblateLatents("sae", [latent]), 0.0),
                        (AblateLatents("sae", [latent], mode="mean",
                                       means=torch.full((96,), 0.25)), 0.25)):
        with lens.edit(edit):
            after = lens.encode(tokens).activations["sae"]
        before = enc.activations["sae"]
        codes = lens.dictionaries["sae"].encode(before)
        expected = before + (value - codes[..., latent:latent + 1]) * \
            lens.dictionaries["sae"].W_dec[latent]
        assert torch.allclose(after, expected, atol=1e-5), edit


def test_generate_with_the_kv_cache_equals_full_recomputation_under_an_edit(lens) -> None:
    edit = AddLatent("sae", latent=3, coef=4.0)
    gen = lens.generate("abc", max_new_tokens=6, edits=[edit])
    ids = lens.tokenize("abc").ids
    for _ in range(6):  # greedy decoding recomputing every position, no cache
        logits = lens.forward(ids, edits=[edit]).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen.ids, ids)
    plain = lens.generate("abc", max_new_tokens=6)
    assert not torch.equal(plain.ids, gen.ids)


def test_edits_at_chosen_positions_apply_to_new_tokens_during_generate(lens) -> None:
    edit = AddLatent("sae", latent=3, coef=4.0, positions=[5, 6])
    gen = lens.generate("abc", max_new_tokens=5, edits=[edit])
    ids = lens.tokenize("abc").ids
    for _ in range(5):
        logits = lens.forward(ids, edits=[edit]).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen.ids, ids)


def test_batched_generation_with_left_padding_matches_one_prompt_at_a_time(lens) -> None:
    edit = AddLatent("sae", latent=3, coef=4.0, positions=[1, 4])
    both = lens.generate(["abcdef", "xy"], max_new_tokens=4, edits=[edit])
    for i, prompt in enumerate(["abcdef", "xy"]):
        alone = lens.generate(prompt, max_new_tokens=4, edits=[edit])
        assert both.texts[i] == alone.texts[0]


def test_splice_with_error_reproduces_and_without_changes_logits(lens) -> None:
    tokens = lens.tokenize(TEXTS)
    clean = lens.forward(tokens).logits
    with_error = lens.forward(tokens, splice=["sae"], keep_error=True).logits
    assert torch.allclose(with_error, clean, atol=1e-5)
    spliced = lens.forward(tokens, splice=["sae"]).logits
    assert (spliced - clean).abs().max() > 1e-3


def test_transcoder_reads_one_site_and_writes_another(tiny_llama) -> None:
    torch.manual_seed(1)
    transcoder = build("topk", d_in=32, n_latents=64, k=4, pre_encoder_bias=False,
                       hookpoint="mlp_in.2", target_hookpoint="mlp_out.2")
    lens = Lens(tiny_llama, {"tc": transcoder})
    assert str(lens.attached["tc"].read).endswith(":input")
    tokens = lens.tokenize(TEXTS)
    clean = lens.forward(tokens).logits
    assert torch.allclose(lens.forward(tokens, splice=["tc"], keep_error=True).logits, clean,
                          atol=1e-5)
    assert lens.encode(tokens).activations["tc"].shape[-1] == 32


def test_attribution_gradient_matches_a_finite_difference_of_an_edit(lens) -> None:
    tokens = lens.tokenize("gradient check")
    position, latent, target = 3, 11, 42
    with lens.attribution(["sae"]) as leaves:
        logits = lens.forward(tokens).logits
        logits[0, -1, target].backward()
    grad = leaves.codes["sae"].grad[0, position, latent]
    clean = lens.forward(tokens).logits
    assert torch.allclose(logits.detach(), clean, atol=1e-5)  # leaves keep the clean value

    def logit(eps: float) -> float:
        edit = AddLatent("sae", latent, eps, positions=[position])
        return float(lens.forward(tokens, edits=[edit]).logits[0, -1, target])

    eps = 1e-2
    numeric = (logit(eps) - logit(-eps)) / (2 * eps)
    assert math.isclose(float(grad), numeric, rel_tol=2e-2, abs_tol=1e-4)
    assert leaves.errors["sae"].grad is not None
    assert lens.dictionaries["sae"].W_dec.grad is None


def test_add_vector_needs_no_dictionary(tiny_llama) -> None:
    lens = Lens(tiny_llama)
    vector = torch.randn(32)
    tokens = lens.tokenize("dense")
    clean = lens.forward(tokens).logits
    steered = lens.forward(tokens, edits=[AddVector("resid.0", vector, coef=2.0)]).logits
    assert (steered - clean).abs().max() > 1e-3
    zeroed = lens.forward(tokens, edits=[ZeroAblate("mlp_out.1")]).logits
    assert (zeroed - clean).abs().max() > 1e-4


def test_bad_input_names_what_to_change(tiny_llama, lens) -> None:
    with pytest.raises(ValueError, match="d_in=16 but the model's activation"):
        Lens(tiny_llama, {"wrong": sae(d=16)})
    with pytest.raises(ValueError, match="unknown hookpoint"):
        Lens(tiny_llama, {"wrong": sae(hookpoint="model.layers.1.nope")})
    with pytest.raises(IndexError, match="latent 96 is out of range"), \
            lens.edit(AddLatent("sae", 96, 1.0)):
        pass
    with pytest.raises(ValueError, match="coef must be a finite number"):
        lens.generate("x", edits=[AddLatent("sae", 1, float("nan"))])
    with pytest.raises(KeyError, match="no dictionary named 'other'"):
        lens.encode("x", names=["other"])
    with pytest.raises(ValueError, match="more than the model context of 64"):
        lens.encode("y" * 80)
    with pytest.raises(ValueError, match="exceeds the model context"):
        lens.generate("z" * 60, max_new_tokens=10)
    with pytest.raises(ValueError, match="mean ablation needs means"):
        lens.forward("x", edits=[AblateLatents("sae", [1], mode="mean")])


def test_capture_and_set_activation(lens) -> None:
    tokens = lens.tokenize(TEXTS)
    out = lens.forward(tokens, capture=["resid.2", "mlp_in.1"])
    early = lens.capture(tokens, ["resid.2"])
    assert torch.equal(out.captured["resid.2"], early["resid.2"])
    assert out.captured["mlp_in.1"].shape == (*tokens.shape, 32)
    value = torch.zeros_like(early["resid.2"])
    edited = lens.forward(tokens, edits=[SetActivation("resid.2", value)], capture=["resid.2"])
    keep = ~tokens.special
    assert edited.captured["resid.2"][keep].abs().max() == 0
    assert torch.equal(edited.captured["resid.2"][~keep], early["resid.2"][~keep])


def test_only_the_lens_and_the_hookpoint_primitives_install_hooks() -> None:
    """The feature API is the single place that hooks a model's forward pass (plus the
    primitives in models/hookpoints that it and the harvest are built on)."""
    root = Path(sparselens.__file__).parent
    allowed = {root / "models" / "hookpoints.py", root / "lens" / "dispatch.py"}
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if path not in allowed and re.search(
                     r"register_(forward|full_backward)(_pre)?_hook|\bhooks\(", path.read_text())]
    assert offenders == []


def test_per_row_vectors_truncation_and_last_logits(tiny_llama) -> None:
    lens = Lens(tiny_llama)
    tokens = lens.tokenize(["same text", "same text"])
    vectors = torch.stack([torch.zeros(32), torch.randn(32)])
    out = lens.forward(tokens, edits=[AddVector("resid.1", vectors)]).logits
    clean = lens.forward(tokens).logits
    assert torch.equal(out[0], clean[0]) and (out[1] - clean[1]).abs().max() > 1e-4
    assert lens.forward(tokens, logits_to_keep=1).logits.shape[1] == 1
    cut = lens.tokenize(["y" * 80, "short"], truncate=True)
    assert cut.shape == (2, 64) and cut.attention_mask[1].sum() == 5
    with pytest.raises(ValueError, match="2 vectors for a batch of 1"):
        lens.forward("x", edits=[AddVector("resid.1", vectors)])
