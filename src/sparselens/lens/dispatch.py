"""The one place where sparselens hooks into a model's forward pass for dictionaries.

Every use of an attached dictionary (capturing codes, splicing, edits, attribution leaves) is
an *action* with a read hookpoint and a write hookpoint. While any action is active, the
dispatcher keeps exactly one hook per hookpoint involved plus one pre-hook on the model
itself; the hook at a site runs the active actions for that site in the order they were
entered. With no action active no hook is installed at all, so the model runs exactly as
unedited: an empty edit reproduces the model bit for bit.

The model pre-hook records, for every forward call, each token's absolute position and
whether it may be touched (not special, not padding). During `generate` with a key/value cache
a call sees only the new tokens, so positions come from the attention mask (or the cache
length) and prompt positions are edited once, in the prefill.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sparselens.models.hookpoints import Hookpoint, hooks

Run = Callable[[Tensor, Tensor, "Frame"], "Tensor | None"]
"""``(activation where the action reads, activation being replaced, frame) -> new or None``."""


@dataclass
class Frame:
    """What the current forward call is about: ``(B, T)`` positions and the editable tokens."""

    positions: Tensor
    keep: Tensor

    def mask(self, positions: Sequence[int] | None, include_special: bool) -> Tensor:
        """Bool ``(B, T)``: where an edit with these settings applies."""
        mask = torch.ones_like(self.keep) if include_special else self.keep
        if positions is not None:
            wanted = torch.as_tensor(list(positions), dtype=self.positions.dtype,
                                     device=self.positions.device)
            mask = mask & torch.isin(self.positions, wanted)
        return mask


@dataclass(eq=False)
class Action:
    """One active use of the forward pass."""

    read: Hookpoint
    write: Hookpoint
    run: Run


class Dispatcher:
    """Installs and removes the hooks that run the active actions."""

    def __init__(self, model: nn.Module, special_ids: Sequence[int]) -> None:
        self.model = model
        self.special_ids = torch.tensor(sorted(special_ids), dtype=torch.long)
        self.active: list[Action] = []
        self.frame: Frame | None = None
        self._inputs: dict[int, Tensor] = {}
        self._installed: contextlib.ExitStack | None = None

    @contextlib.contextmanager
    def activate(self, actions: Sequence[Action]) -> Iterator[None]:
        """Run `actions` in every forward pass inside the block."""
        self.active.extend(actions)
        self._reinstall()
        try:
            yield
        finally:
            for action in actions:
                self.active.remove(action)
            self._reinstall()

    def _reinstall(self) -> None:
        if self._installed is not None:
            self._installed.close()
            self._installed = None
            self._inputs.clear()
        if not self.active:
            return
        stack = contextlib.ExitStack()
        sites = list(dict.fromkeys(hp for a in self.active for hp in (a.read, a.write)))
        handle = self.model.register_forward_pre_hook(self._begin_call, with_kwargs=True)
        stack.callback(handle.remove)
        stack.enter_context(hooks(self.model, sites, self._at_site))
        self._installed = stack

    def _at_site(self, hp: Hookpoint, act: Tensor) -> Tensor | None:
        changed = False
        for action in list(self.active):
            if hp == action.read:
                self._inputs[id(action)] = act
            if hp == action.write:
                x = self._inputs.pop(id(action), act)
                new = action.run(x, act, self._frame_for(act))
                if new is not None:
                    act, changed = new, True
        return act if changed else None

    def _frame_for(self, act: Tensor) -> Frame:
        """The call's frame, or every position editable when the call did not go through the
        model's own forward (a submodule called directly)."""
        batch, length = act.shape[0], act.shape[1] if act.ndim > 2 else 1
        frame = self.frame
        if frame is None or tuple(frame.keep.shape) != (batch, length):
            positions = torch.arange(length, device=act.device).expand(batch, length)
            return Frame(positions, torch.ones(batch, length, dtype=torch.bool,
                                               device=act.device))
        return frame

    def _begin_call(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args and isinstance(args[0], Tensor):
            ids = args[0]
        embeds = kwargs.get("inputs_embeds")
        if ids is None and embeds is None:
            self.frame = None
            return
        batch, length = (ids.shape if ids is not None else embeds.shape[:2])
        device = (ids if ids is not None else embeds).device
        mask = kwargs.get("attention_mask")
        mask = mask[:, -length:] if isinstance(mask, Tensor) and mask.ndim == 2 else None
        positions = self._positions(kwargs, batch, length, device)
        keep = torch.ones(batch, length, dtype=torch.bool, device=device)
        if ids is not None:
            keep &= ~torch.isin(ids, self.special_ids.to(device))
        if mask is not None:
            keep &= mask.to(torch.bool)
        self.frame = Frame(positions, keep)

    @staticmethod
    def _positions(kwargs: dict[str, Any], batch: int, length: int,
                   device: torch.device) -> Tensor:
        """Absolute positions of the call's tokens: from the full attention mask when there is
        one (left padding shifts them per row), else from the cache length."""
        mask = kwargs.get("attention_mask")
        if isinstance(mask, Tensor) and mask.ndim == 2:
            return (mask.long().cumsum(-1) - 1).clamp_min(0)[:, -length:].to(device)
        position_ids = kwargs.get("position_ids")
        if isinstance(position_ids, Tensor) and position_ids.ndim == 2:
            return position_ids.expand(batch, length).to(device)
        offset = 0
        cache_position = kwargs.get("cache_position")
        past = kwargs.get("past_key_values")
        if isinstance(cache_position, Tensor) and cache_position.numel():
            offset = int(cache_position.reshape(-1)[0])
        elif past is not None and hasattr(past, "get_seq_length"):
            offset = int(past.get_seq_length())
        return torch.arange(offset, offset + length, device=device).expand(batch, length)
