"""Hookpoints: name a place in any ``nn.Module`` and read or edit the activation there.

A hookpoint is ``<module path>[:input|:output]`` where the path may hold ``*`` wildcards
(``model.layers.*.mlp``), or a shorthand resolved by introspection, not a model table:

==============  =====================================================================
``resid.L``     output of transformer block L (the residual stream after block L)
``resid_pre.L`` input of block L
``mlp_in.L``    input of block L's MLP module (after its pre-norm where the model has one)
``mlp_out.L``   output of block L's MLP module
``attn_out.L``  output of block L's attention module
==============  =====================================================================

The block list is the longest ``nn.ModuleList`` of identical block types; the MLP and attention
children are found by name (``mlp``/``ffn``/``feed_forward``, ``attn``/``attention``).
`capture` reads several hookpoints in one forward pass and stops the pass as soon as the last
one has been seen, so no later layer and no logits are computed.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

SIDES = ("input", "output")
SHORTHANDS = ("resid", "resid_pre", "mlp_in", "mlp_out", "attn_out")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "mlp_block")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")


@dataclass(frozen=True)
class Hookpoint:
    """A resolved hookpoint: a concrete module path and a side."""

    module: str
    side: str = "output"

    def __str__(self) -> str:
        return self.module if self.side == "output" else f"{self.module}:{self.side}"


class StopForward(Exception):
    """Raised inside a hook once every requested activation has been captured."""


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer block list: the longest ModuleList whose children share one type."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) != 1:
                continue
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of repeated blocks; name hookpoints "
                         "by module path instead of a shorthand (see `sparselens hookpoints`)")
    return best


def _child_named(block: nn.Module, candidates: Sequence[str], what: str) -> str:
    names = [name for name, _ in block.named_children()]
    for cand in candidates:
        if cand in names:
            return cand
    for name in names:  # e.g. GPT-NeoX "attention", GPT-2 "attn", "block_sparse_moe"
        if any(c in name.lower() for c in candidates):
            return name
    raise ValueError(f"could not find the {what} module in {type(block).__name__} "
                     f"(children: {names}); name it by path instead")


def expand_shorthand(model: nn.Module, spec: str) -> list[Hookpoint] | None:
    """Resolve ``resid.6``-style names; returns None if `spec` is not a shorthand."""
    match = re.fullmatch(r"(resid|resid_post|resid_pre|mlp_in|mlp_out|attn_out)\.(\d+|\*)", spec)
    if not match:
        return None
    kind, layer = match.groups()
    prefix, blocks = find_blocks(model)
    layers = range(len(blocks)) if layer == "*" else [int(layer)]
    out = []
    for index in layers:
        if not 0 <= index < len(blocks):
            raise ValueError(f"{spec!r}: layer {index} out of range; the model has "
                             f"{len(blocks)} blocks (0..{len(blocks) - 1})")
        base = f"{prefix}.{index}"
        if kind in ("resid", "resid_post"):
            out.append(Hookpoint(base, "output"))
        elif kind == "resid_pre":
            out.append(Hookpoint(base, "input"))
        elif kind in ("mlp_in", "mlp_out"):
            child = _child_named(blocks[index], _MLP_NAMES, "MLP")
            out.append(Hookpoint(f"{base}.{child}", "input" if kind == "mlp_in" else "output"))
        else:
            child = _child_named(blocks[index], _ATTN_NAMES, "attention")
            out.append(Hookpoint(f"{base}.{child}", "output"))
    return out


def resolve(model: nn.Module, spec: str | Hookpoint) -> list[Hookpoint]:
    """Resolve one spec (shorthand, path, or wildcard path) to concrete hookpoints."""
    if isinstance(spec, Hookpoint):
        spec = str(spec)
    spec = spec.strip()
    expanded = expand_shorthand(model, spec)
    if expanded is not None:
        return expanded
    path, _, side = spec.partition(":")
    side = side or "output"
    if side not in SIDES:
        raise ValueError(f"hookpoint {spec!r}: side must be one of {SIDES}, got {side!r}")
    names = [name for name, _ in model.named_modules() if name]
    if any(ch in path for ch in "*?["):
        matches = [n for n in names if fnmatch.fnmatchcase(n, path)]
        # Order by the model's registration order, which follows execution for transformers.
    else:
        matches = [path] if path in names else []
    if not matches:
        close = difflib.get_close_matches(path, names + [f"{s}.0" for s in SHORTHANDS], n=5,
                                          cutoff=0.5)
        hint = f"; closest valid names: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown hookpoint {spec!r} in {type(model).__name__}{hint}. "
                         "Run `sparselens hookpoints MODEL` to list them all")
    return [Hookpoint(m, side) for m in matches]


def resolve_all(model: nn.Module, specs: Sequence[str | Hookpoint]) -> list[Hookpoint]:
    """Resolve several specs, dropping duplicates while keeping order."""
    seen: dict[Hookpoint, None] = {}
    for spec in specs:
        for hp in resolve(model, spec):
            seen.setdefault(hp, None)
    return list(seen)


def _first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise TypeError(f"hooked module returned {type(value).__name__}, not a tensor")


def _input_tensor(args: tuple, kwargs: dict) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    for key in ("hidden_states", "input", "x", "inputs_embeds"):
        if isinstance(kwargs.get(key), Tensor):
            return kwargs[key]
    for value in kwargs.values():
        if isinstance(value, Tensor) and value.is_floating_point():
            return value
    raise TypeError("could not find the input tensor of the hooked module")


def _replace_first(value: Any, new: Tensor) -> Any:
    if isinstance(value, Tensor):
        return new
    if isinstance(value, tuple):
        return (new, *value[1:])
    if isinstance(value, list):
        return [new, *value[1:]]
    raise TypeError(f"cannot replace the output of type {type(value).__name__}")


EditFn = Callable[[Tensor], Tensor]


@contextlib.contextmanager
def hooks(model: nn.Module, hookpoints: Sequence[Hookpoint],
          fn: Callable[[Hookpoint, Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn(hookpoint, activation)`` at each hookpoint; a returned tensor replaces it."""
    modules = dict(model.named_modules())
    handles = []
    for hp in hookpoints:
        module = modules[hp.module]
        if hp.side == "output":
            def out_hook(_m, _args, output, hp=hp):
                new = fn(hp, _first_tensor(output))
                return None if new is None else _replace_first(output, new)

            handles.append(module.register_forward_hook(out_hook))
        else:
            def in_hook(_m, args, kwargs, hp=hp):
                new = fn(hp, _input_tensor(args, kwargs))
                if new is None:
                    return None
                if args and isinstance(args[0], Tensor):
                    return (new, *args[1:]), kwargs
                key = next(k for k, v in kwargs.items() if isinstance(v, Tensor))
                return args, {**kwargs, key: new}

            handles.append(module.register_forward_pre_hook(in_hook, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture(model: nn.Module, hookpoints: Sequence[Hookpoint], stop_early: bool = True,
            **inputs: Any) -> dict[Hookpoint, Tensor]:
    """Run one forward pass and return the activation at every hookpoint.

    With `stop_early` the pass ends (via `StopForward`) once all activations are captured.
    """
    wanted = set(hookpoints)
    captured: dict[Hookpoint, Tensor] = {}

    def grab(hp: Hookpoint, act: Tensor) -> None:
        captured[hp] = act.detach()
        if stop_early and wanted.issubset(captured):
            raise StopForward

    with hooks(model, hookpoints, grab), contextlib.suppress(StopForward):
        model(**inputs)
    missing = wanted.difference(captured)
    if missing:
        raise RuntimeError(f"hookpoints {sorted(map(str, missing))} were never reached in "
                           "the forward pass")
    return {hp: captured[hp] for hp in hookpoints}


@contextlib.contextmanager
def edit(model: nn.Module, hookpoint: Hookpoint, fn: EditFn) -> Iterator[None]:
    """Replace the activation at one hookpoint by ``fn(activation)`` during forwards."""
    with hooks(model, [hookpoint], lambda _hp, act: fn(act)):
        yield


def list_hookpoints(model: nn.Module, channels_first: bool = False,
                    **inputs: Any) -> list[tuple[str, int | None]]:
    """Every module path with its output width, found by one tiny forward pass.

    `channels_first`: a 4-D output ``(B, C, H, W)`` (a CNN feature map) has width C."""
    widths: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m, _a, output, name=name):
            with contextlib.suppress(TypeError):
                out = _first_tensor(output)
                widths[name] = int(out.shape[1] if channels_first and out.ndim == 4
                                   else out.shape[-1])

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, widths.get(name)) for name, _ in model.named_modules() if name]
