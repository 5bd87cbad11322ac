"""Freeze what makes a transformer nonlinear apart from its MLPs: attention patterns and the
denominators of normalisation layers.

With both frozen and every MLP replaced by a transcoder (codes and error terms as leaves), the
map from the leaves to the logits is linear (Ameisen et al., "Circuit tracing", 2025; Dunefsky
et al., "Transcoders find interpretable LLM feature circuits", 2024), so gradients are exact
direct effects. Values are untouched: a frozen forward computes the same numbers as a plain
one; only the backward changes.

- Attention: the outputs of the query and key projections are detached, so no gradient reaches
  the pattern; values and the output projection stay linear in the residual stream.
- RMSNorm-style layers (``y = g * x / rms(x)``, any class named ``*RMSNorm``): the output
  becomes ``y + (x - x.detach()) * (y / x).detach()``, whose Jacobian is ``diag(g / rms)``
  with rms held constant. ``nn.LayerNorm``: centring stays linear, the standard deviation is
  held constant.
"""

from __future__ import annotations

from torch import Tensor, nn

from sparselens.lens.dispatch import Action, Frame
from sparselens.models.hookpoints import Hookpoint, find_blocks

QUERY_KEY_NAMES = (("q_proj", "k_proj"), ("query", "key"), ("q", "k"))


def _freeze_rms(x: Tensor, act: Tensor, frame: Frame) -> Tensor:
    xf = x.to(act.dtype)
    ratio = (act / xf.masked_fill(xf == 0, 1.0)).masked_fill(xf == 0, 0.0).detach()
    return act.detach() + (xf - xf.detach()) * ratio


def _freeze_layernorm(module: nn.LayerNorm):
    def run(x: Tensor, act: Tensor, frame: Frame) -> Tensor:
        xd = x - x.detach()
        centred = xd - xd.mean(-1, keepdim=True)
        std = (x.detach().var(-1, unbiased=False, keepdim=True) + module.eps).sqrt()
        scaled = centred / std
        if module.weight is not None:
            scaled = scaled * module.weight.detach()
        return act.detach() + scaled.to(act.dtype)

    return run


def _detach(x: Tensor, act: Tensor, frame: Frame) -> Tensor:
    return act.detach()


def freeze_actions(model: nn.Module) -> list[Action]:
    """Actions that detach every attention block's queries and keys and linearise every norm."""
    actions = []
    for name, module in model.named_modules():
        if type(module).__name__.endswith("RMSNorm"):
            actions.append(Action(Hookpoint(name, "input"), Hookpoint(name, "output"),
                                  _freeze_rms))
        elif isinstance(module, nn.LayerNorm):
            actions.append(Action(Hookpoint(name, "input"), Hookpoint(name, "output"),
                                  _freeze_layernorm(module)))
    prefix, blocks = find_blocks(model)
    for index, block in enumerate(blocks):
        attention = _attention(block)
        if attention is None:
            continue
        attn_name, attn = attention
        children = dict(attn.named_children())
        pair = next((p for p in QUERY_KEY_NAMES if all(c in children for c in p)), None)
        if pair is None:
            raise ValueError(f"cannot freeze attention patterns in {type(attn).__name__}: it has "
                             f"no separate query/key projections (children: {sorted(children)});"
                             " fused QKV projections (GPT-2's c_attn) are not supported")
        for child in pair:
            hp = Hookpoint(f"{prefix}.{index}.{attn_name}.{child}", "output")
            actions.append(Action(hp, hp, _detach))
    return actions


def _attention(block: nn.Module) -> tuple[str, nn.Module] | None:
    for name, child in block.named_children():
        if any(key in name.lower() for key in ("attn", "attention")):
            return name, child
    return None
