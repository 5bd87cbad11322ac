"""Hookpoints resolve by introspection and capture exactly what a plain forward computes."""

from __future__ import annotations

import pytest
import torch

from sparselens.models.hookpoints import Hookpoint, capture, edit, find_blocks, resolve, resolve_all

ARCHS = ["tiny_llama", "tiny_gpt2"]


@pytest.fixture(params=ARCHS)
def loaded(request):
    return request.getfixturevalue(request.param)


def _ids(n: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(1))


def test_resid_equals_hidden_states(loaded):
    model = loaded.model
    n_blocks = len(find_blocks(model)[1])
    ids = _ids()
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    # The last hidden state has the final norm applied, so only intermediate layers compare.
    for layer in range(n_blocks - 1):
        (hp,) = resolve(model, f"resid.{layer}")
        got = capture(model, [hp], input_ids=ids)[hp]
        torch.testing.assert_close(got, hidden[layer + 1], rtol=0, atol=0)
        (pre,) = resolve(model, f"resid_pre.{layer}")
        got_pre = capture(model, [pre], input_ids=ids)[pre]
        torch.testing.assert_close(got_pre, hidden[layer], rtol=0, atol=0)


def test_several_hookpoints_one_pass_decompose_the_block(loaded):
    """resid.L = resid_pre.L + attn_out.L + mlp_out.L, and mlp_out.L = mlp(mlp_in.L)."""
    model = loaded.model
    names = ["resid_pre.1", "attn_out.1", "mlp_in.1", "mlp_out.1", "resid.1"]
    hps = resolve_all(model, names)
    assert len(hps) == len(names)
    calls = []
    block = find_blocks(model)[1][1]
    handle = block.register_forward_hook(lambda *_: calls.append(1))
    try:
        acts = capture(model, hps, input_ids=_ids())
    finally:
        handle.remove()
    assert calls == [1]  # one forward pass served all five hookpoints
    pre, attn, mlp_in, mlp_out, post = (acts[hp] for hp in hps)
    for hp in hps:
        assert acts[hp].shape[-1] == pre.shape[-1]
    torch.testing.assert_close(post, pre + attn + mlp_out, rtol=1e-5, atol=1e-5)
    mlp = dict(model.named_modules())[hps[3].module]
    torch.testing.assert_close(mlp(mlp_in), mlp_out, rtol=1e-5, atol=1e-5)


def test_early_stop_skips_later_layers(loaded):
    model = loaded.model
    _, blocks = find_blocks(model)
    counts = {"last": 0, "head": 0}
    last = blocks[len(blocks) - 1].register_forward_hook(
        lambda *_: counts.__setitem__("last", counts["last"] + 1))
    head = model.get_output_embeddings().register_forward_hook(
        lambda *_: counts.__setitem__("head", counts["head"] + 1))
    try:
        hps = resolve_all(model, ["resid.0", "mlp_out.1"])
        capture(model, hps, stop_early=True, input_ids=_ids())
        assert counts == {"last": 0, "head": 0}
        capture(model, hps, stop_early=False, input_ids=_ids())
        assert counts == {"last": 1, "head": 1}
    finally:
        last.remove()
        head.remove()


def test_shorthands_resolve_on_both_architectures(tiny_llama, tiny_gpt2):
    llama = {s: str(resolve(tiny_llama.model, f"{s}.2")[0])
             for s in ("resid", "resid_pre", "mlp_in", "mlp_out", "attn_out")}
    assert llama == {"resid": "model.layers.2", "resid_pre": "model.layers.2:input",
                     "mlp_in": "model.layers.2.mlp:input", "mlp_out": "model.layers.2.mlp",
                     "attn_out": "model.layers.2.self_attn"}
    gpt2 = {s: str(resolve(tiny_gpt2.model, f"{s}.2")[0]) for s in ("mlp_in", "attn_out")}
    assert gpt2 == {"mlp_in": "transformer.h.2.mlp:input", "attn_out": "transformer.h.2.attn"}
    assert len(resolve(tiny_llama.model, "resid.*")) == 4
    assert resolve(tiny_gpt2.model, "transformer.h.*.mlp") == [
        Hookpoint(f"transformer.h.{i}.mlp") for i in range(3)]


def test_unknown_hookpoint_lists_close_names(tiny_llama):
    with pytest.raises(ValueError, match=r"closest valid names: .*model\.layers\.1\.mlp"):
        resolve(tiny_llama.model, "model.layers.1.mlpp")
    with pytest.raises(ValueError, match="out of range; the model has 4 blocks"):
        resolve(tiny_llama.model, "resid.9")
    with pytest.raises(ValueError, match="side must be one of"):
        resolve(tiny_llama.model, "model.layers.1:sideways")


def test_edit_replaces_and_identity_keeps(tiny_llama):
    model = tiny_llama.model
    ids = _ids()
    (hp,) = resolve(model, "resid.1")
    base = model(input_ids=ids).logits
    with edit(model, hp, lambda act: act.clone()):
        same = model(input_ids=ids).logits
    with edit(model, hp, torch.zeros_like):
        changed = model(input_ids=ids).logits
    torch.testing.assert_close(same, base, rtol=0, atol=0)
    assert not torch.allclose(changed, base)
    torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=0, atol=0)  # hook removed
