"""`Lens`: a language model with sparse dictionaries attached at their hookpoints.

Text in, sparse features out, and interventions on the way through. Everything in sparselens
that *uses* a dictionary on a model (evaluation, explanations, the viewer, steering, circuits,
comparison) goes through this class; it is the only place that hooks a model's forward pass
for dictionaries (see `dispatch`).

    lens = Lens.load("gemma-3-270m", ["runs/default/sae"])
    enc = lens.encode(["The Eiffel Tower is in Paris."])   # one pass, stops after the site
    codes = enc.codes["sae"]                                 # SparseCodes over (B, L)
    with lens.edit(AddLatent("sae", latent=123, coef=8.0)):
        print(lens.generate("My favourite city is", max_new_tokens=20).texts[0])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from sparselens.data.chunking import special_token_ids
from sparselens.data.taps import forward_kwargs
from sparselens.dictionaries.base import Dictionary
from sparselens.lens.attached import Attached
from sparselens.lens.codes import SparseCodes
from sparselens.lens.dispatch import Action, Dispatcher, Frame
from sparselens.lens.edits import Edit, Splice
from sparselens.lens.freeze import freeze_actions
from sparselens.lens.tokens import Inputs, Tokens, context_length, pad_id, tokenize
from sparselens.models.hookpoints import Hookpoint, StopForward, capture, resolve
from sparselens.models.source import LoadedModel


@dataclass
class Encoding:
    """What `Lens.encode` returns."""

    tokens: Tokens
    codes: dict[str, SparseCodes]
    """Per dictionary, codes over the ``(B, L)`` grid; zero on special tokens and padding."""
    activations: dict[str, Tensor]
    """Per dictionary, the activation it read ``(B, L, d_in)`` (model dtype)."""


@dataclass
class LensOutput:
    """What `Lens.forward` returns."""

    tokens: Tokens
    logits: Tensor
    captured: dict[str, Tensor] = field(default_factory=dict)
    """Activations asked for with ``capture=`` (after edits), by the name given."""


@dataclass
class Generation:
    """What `Lens.generate` returns: continuations of each prompt."""

    prompts: list[str]
    texts: list[str]
    """The generated continuations (prompt not included)."""
    ids: Tensor
    """``(B, prompt length + new tokens)`` including the (left-padded) prompt."""
    prompt_length: int


@dataclass
class Leaves:
    """Autograd leaves of the last forward inside `Lens.attribution`.

    ``codes[name]`` is ``(B, L, n_latents)`` and ``errors[name]`` ``(B, L, d_out)``; the model
    computed ``decode(codes) + errors`` at the dictionary's write site, which equals the clean
    activation, so after ``metric.backward()`` ``codes[name].grad`` is d(metric)/d(latent) and
    ``codes[name] * codes[name].grad`` the usual activation-times-gradient attribution.
    """

    codes: dict[str, Tensor] = field(default_factory=dict)
    errors: dict[str, Tensor] = field(default_factory=dict)
    inputs: dict[str, Tensor] = field(default_factory=dict)
    embeddings: Tensor | None = None


class Lens:
    """A model plus dictionaries attached at their hookpoints."""

    def __init__(self, model: LoadedModel,
                 dictionaries: Mapping[str, Dictionary] | Sequence[Dictionary] = ()) -> None:
        self.loaded = model
        self.model = model.model
        self.tokenizer = model.tokenizer
        self.context = context_length(self.model)
        self.attached: dict[str, Attached] = {}
        self._dispatch = Dispatcher(self.model, special_token_ids(self.tokenizer))
        items = (dictionaries.items() if isinstance(dictionaries, Mapping)
                 else ((f"d{i}", d) for i, d in enumerate(dictionaries)))
        for name, dictionary in items:
            self.attach(name, dictionary)

    @classmethod
    def load(cls, model: str | LoadedModel = "gemma-3-270m",
             dictionaries: Sequence[str | Path] = (), *, dtype: str = "float32",
             device: str = "cpu") -> Lens:
        """Load a model (embedded name, local dir, GGUF) and dictionaries (native folders or
        anything `load_any` reads), each named after its folder."""
        from sparselens.io.detect import load_any
        from sparselens.models.source import load_model

        loaded = model if isinstance(model, LoadedModel) else load_model(model, dtype=dtype,
                                                                         device=device)
        lens = cls(loaded)
        for path in dictionaries:
            name = Path(path).name
            if name in lens.attached:
                name = str(path)
            lens.attach(name, load_any(path).to(device))
        return lens

    # ---- attaching ----

    @property
    def names(self) -> list[str]:
        return list(self.attached)

    @property
    def dictionaries(self) -> dict[str, Dictionary]:
        return {name: att.dictionary for name, att in self.attached.items()}

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def attach(self, name: str, dictionary: Dictionary, hookpoint: str | None = None,
               target_hookpoint: str | None = None) -> Attached:
        """Attach `dictionary` under `name`, reading at `hookpoint` (default: the one recorded in
        its config) and writing at `target_hookpoint` (transcoders; default: the same site)."""
        if name in self.attached:
            raise ValueError(f"a dictionary named {name!r} is already attached; pick another name")
        spec = hookpoint or dictionary.cfg.hookpoint
        if spec is None:
            raise ValueError(f"dictionary {name!r} does not record its hookpoint; pass "
                             "hookpoint= (e.g. 'resid.6' or a module path)")
        read = self._one_site(spec, name)
        target = target_hookpoint or dictionary.cfg.target_hookpoint
        write = self._one_site(target, name) if target else read
        self._check_widths(name, dictionary, read, write)
        attached = Attached(name, dictionary, read, write)
        self.attached[name] = attached
        return attached

    def _one_site(self, spec: str, name: str) -> Hookpoint:
        try:
            found = resolve(self.model, spec)
        except ValueError as err:
            raise ValueError(f"dictionary {name!r}: {err}") from None
        if len(found) != 1:
            raise ValueError(f"dictionary {name!r}: hookpoint {spec!r} names {len(found)} sites; "
                             "give one site per dictionary")
        return found[0]

    def _check_widths(self, name: str, dictionary: Dictionary, read: Hookpoint,
                      write: Hookpoint) -> None:
        """One forward over a single token tells every site's width."""
        sites = list(dict.fromkeys([read, write]))
        ids = torch.tensor([[pad_id(self.tokenizer)]], device=self.device)
        with torch.no_grad():
            widths = {hp: act.shape[-1] for hp, act in capture(self.model, sites,
                                                                input_ids=ids).items()}
        cfg = dictionary.cfg
        for hp, want, what in ((read, cfg.d_in, "d_in"), (write, cfg.d_out, "d_out")):
            if widths[hp] != want:
                raise ValueError(
                    f"dictionary {name!r} has {what}={want} but the model's activation at {hp} is "
                    f"{widths[hp]} wide: it was trained on another model or hookpoint; attach it "
                    "to the model it was trained on, or pass the right hookpoint=")

    def _get(self, name: str) -> Attached:
        if name not in self.attached:
            raise KeyError(f"no dictionary named {name!r} is attached; attached: {self.names}")
        return self.attached[name]

    def _select(self, names: Sequence[str] | str | None) -> list[Attached]:
        if names is None:
            return list(self.attached.values())
        return [self._get(n) for n in ([names] if isinstance(names, str) else names)]

    # ---- reading ----

    def tokenize(self, inputs: Inputs | Tokens, max_length: int | None = None,
                 padding_side: Literal["left", "right"] = "right",
                 truncate: bool = False) -> Tokens:
        """Token grid of texts or ids (longer than the context: an error, or cut with
        `truncate`)."""
        return tokenize(self.tokenizer, inputs, context=self.context, max_length=max_length,
                        padding_side=padding_side, truncate=truncate).to(self.device)

    @torch.no_grad()
    def encode(self, inputs: Inputs | Tokens, names: Sequence[str] | str | None = None
               ) -> Encoding:
        """Codes of every chosen dictionary from one forward pass that stops after the deepest
        site read. Active edits (an enclosing `edit`) apply on the way."""
        tokens = self.tokenize(inputs)
        chosen = self._select(names)
        seen = self.capture(tokens, list(dict.fromkeys(str(a.read) for a in chosen)))
        read = {a.name: seen[str(a.read)] for a in chosen}
        keep = ~tokens.special.unsqueeze(-1)
        codes = {a.name: SparseCodes.from_dense(a.codes(read[a.name]) * keep) for a in chosen}
        return Encoding(tokens, codes, read)

    @torch.no_grad()
    def mean_codes(self, inputs: Inputs | Tokens, names: Sequence[str] | str | None = None
                   ) -> dict[str, Tensor]:
        """Mean code of each latent over the non-special tokens (for mean ablation)."""
        enc = self.encode(inputs, names)
        keep = ~enc.tokens.special
        n = int(keep.sum())
        if n == 0:
            raise ValueError("no non-special tokens to average over; give some text")
        return {name: codes.dense()[keep].sum(0) / n for name, codes in enc.codes.items()}

    # ---- writing ----

    def _bind(self, edit: Edit) -> Action:
        dictionary = getattr(edit, "dictionary", None)
        if dictionary is not None:
            target: Attached | None = self._get(dictionary)
            read, write = target.read, target.write
        else:
            target = None
            read = write = self._one_site(edit.hookpoint,  # type: ignore[attr-defined]
                                          type(edit).__name__)
        edit.check(target)

        def run(x: Tensor, act: Tensor, frame: Frame) -> Tensor:
            new = edit.apply(target, x, act)
            mask = frame.mask(edit.positions, edit.include_special)
            return torch.where(mask.unsqueeze(-1), new, act)

        return Action(read, write, run)

    @contextlib.contextmanager
    def edit(self, *edits: Edit) -> Iterator[None]:
        """Apply edits to every forward pass (and every `generate` step) inside the block.

        Checked before anything runs: unknown dictionaries, latents out of range, NaN
        coefficients raise here."""
        for edit in edits:
            if not isinstance(edit, Edit):
                raise TypeError(f"not an edit: {edit!r} (use AddLatent, ClampLatent, "
                                "AblateLatents, AddVector, ZeroAblate)")
        actions = [self._bind(e) for e in edits]
        if not actions:
            yield
            return
        with self._dispatch.activate(actions):
            yield

    def splice(self, names: Sequence[str] | str | None = None,
               keep_error: bool = False) -> contextlib.AbstractContextManager[None]:
        """Replace each chosen dictionary's site by its reconstruction (plus the error term if
        `keep_error`) at every non-special position, inside the block."""
        return self.edit(*(Splice(a.name, keep_error) for a in self._select(names)))

    def forward(self, inputs: Inputs | Tokens, edits: Sequence[Edit] = (),
                splice: Sequence[str] = (), keep_error: bool = False,
                capture: Sequence[str] = (), grad: bool | None = None,
                logits_to_keep: int | None = None) -> LensOutput:
        """Full forward pass with logits, under edits and splices, returning the activations
        at the `capture` hookpoints too. Gradients follow the surrounding mode (on inside
        `attribution`) unless `grad` says otherwise. `logits_to_keep=k` computes the logits
        of the last k positions only (a 262k vocabulary makes the rest expensive)."""
        tokens = self.tokenize(inputs)
        captured: dict[str, Tensor] = {}
        with self.edit(*edits), self.splice(list(splice), keep_error) if splice else \
                contextlib.nullcontext(), self._capturing(capture, captured, stop=False), \
                torch.set_grad_enabled(torch.is_grad_enabled() if grad is None else grad):
            extra = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
            logits = self._run(tokens, **extra).logits
        return LensOutput(tokens, logits, captured)

    def capture(self, inputs: Inputs | Tokens, hookpoints: Sequence[str],
                grad: bool = False) -> dict[str, Tensor]:
        """Raw activations ``(B, L, width)`` at hookpoints (after any active edits), from one
        forward pass that stops after the last of them; with `grad` they stay in the autograd
        graph (inside `attribution`, a site downstream of the leaves)."""
        captured: dict[str, Tensor] = {}
        with self._capturing(hookpoints, captured, stop=True), contextlib.suppress(StopForward), \
                torch.set_grad_enabled(grad):
            self._run(self.tokenize(inputs))
        return captured

    @contextlib.contextmanager
    def _capturing(self, specs: Sequence[str], into: dict[str, Tensor],
                   stop: bool) -> Iterator[None]:
        sites = {spec: self._one_site(spec, "capture") for spec in specs}

        def grab(spec: str, hp: Hookpoint) -> Action:
            def run(x: Tensor, act: Tensor, frame: Frame) -> None:
                into[spec] = act if torch.is_grad_enabled() else act.detach()
                if stop and len(into) == len(sites):
                    raise StopForward

            return Action(hp, hp, run)

        if not sites:
            yield
            return
        with self._dispatch.activate([grab(spec, hp) for spec, hp in sites.items()]):
            yield

    def _run(self, tokens: Tokens, **extra: int):
        return self.model(input_ids=tokens.ids, attention_mask=tokens.attention_mask,
                          **forward_kwargs(self.model), **extra)

    @torch.no_grad()
    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 32,
                 edits: Sequence[Edit] = (), *, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = None) -> Generation:
        """Continue each prompt with the key/value cache, under `edits`. Prompt positions are
        edited once (in the prefill), every new token as it is generated."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        tokens = self.tokenize(prompts, padding_side="left")
        length = tokens.ids.shape[1]
        if self.context is not None and length + max_new_tokens > self.context:
            raise ValueError(f"prompt of {length} tokens plus {max_new_tokens} new ones exceeds "
                             f"the model context of {self.context}; shorten either")
        options: dict = {"do_sample": do_sample, "max_new_tokens": max_new_tokens,
                         "pad_token_id": pad_id(self.tokenizer)}
        if do_sample:
            options |= {"temperature": temperature, "top_p": top_p}
        with self.edit(*edits), torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            ids = self.model.generate(input_ids=tokens.ids, attention_mask=tokens.attention_mask,
                                      **options)
        texts = self.tokenizer.batch_decode(ids[:, length:], skip_special_tokens=True)
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        return Generation(prompt_list, texts, ids, length)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Freeze attention patterns and normalisation denominators for the backward pass
        (values unchanged): with transcoders as attribution leaves the model is then linear
        from the leaves to the logits (see `lens.freeze`)."""
        with self._dispatch.activate(freeze_actions(self.model)):
            yield

    @contextlib.contextmanager
    def attribution(self, names: Sequence[str] | str | None = None, *,
                    keep_error: bool = True, embeddings: bool = False,
                    scale: float = 1.0, reference: Leaves | None = None,
                    active_only: bool = False) -> Iterator[Leaves]:
        """Make every chosen dictionary's codes and error term autograd leaves.

        Inside the block, forward passes compute ``decode(codes) + error`` at each write site
        (the clean value) with gradients on; `Leaves` holds the tensors of the last pass, and
        ``inputs[name]``, the activation each dictionary read (part of the graph, so a latent's
        pre-activation can be differentiated with respect to upstream leaves).
        `keep_error=False` drops the error terms (the spliced model); `embeddings=True` makes
        the input embeddings a leaf too; `scale` multiplies the codes. With `reference` (the
        leaves of an earlier pass on the same tokens, possibly of batch 1 for a batch of
        copies) codes and errors are that pass's, not recomputed: integrated gradients scale
        every layer's clean codes together, errors fixed; attribution graphs reuse one pass.
        On special tokens the codes are zero and the error term carries the whole output (a
        constant leaf), so the BOS column stays linear too; without error terms special tokens
        keep their clean, detached activation. `active_only` decodes from the active latents
        alone (a gather instead of a product with the whole decoder): much faster for wide
        dictionaries, but inactive latents then get no gradient."""
        leaves = Leaves()
        chosen = self._select(names)

        def leaf(att: Attached) -> Action:
            def run(x: Tensor, act: Tensor, frame: Frame) -> Tensor:
                keep = frame.keep.unsqueeze(-1)
                if reference is not None:
                    full = _batch_rows(reference.codes[att.name], x.shape[0])
                else:  # no codes on special tokens: their whole output is the error term
                    full = att.codes(x.detach()).detach() * keep
                codes = (full * scale).requires_grad_(True)
                recon = att.decode_active(codes, full) if active_only else att.decode(codes)
                leaves.codes[att.name], leaves.inputs[att.name] = codes, x
                if not keep_error:
                    return torch.where(keep, recon.to(act.dtype), act.detach())
                if reference is not None:
                    error = _batch_rows(reference.errors[att.name], x.shape[0])
                else:
                    error = act.detach().to(recon.dtype) - att.decode_active(full, full)
                leaves.errors[att.name] = error.requires_grad_(True)
                return (recon + leaves.errors[att.name]).to(act.dtype)

            return Action(att.read, att.write, run)

        actions = [leaf(a) for a in chosen]
        if embeddings:
            actions.insert(0, self._embedding_leaf(leaves))
        frozen = [p for a in chosen for p in a.dictionary.parameters() if p.requires_grad]
        for param in frozen:  # gradients go to the leaves, not into the weights' .grad
            param.requires_grad_(False)
        try:
            with self._dispatch.activate(actions), torch.enable_grad():
                yield leaves
        finally:
            for param in frozen:
                param.requires_grad_(True)

    def _embedding_leaf(self, leaves: Leaves) -> Action:
        module = self.model.get_input_embeddings()
        name = next(n for n, m in self.model.named_modules() if m is module)
        site = Hookpoint(name, "output")

        def run(x: Tensor, act: Tensor, frame: Frame) -> Tensor:
            leaves.embeddings = act.detach().requires_grad_(True)
            return leaves.embeddings

        return Action(site, site, run)


def _batch_rows(tensor: Tensor, batch: int) -> Tensor:
    """A reference leaf of batch 1 repeated for a batch of copies (own memory, so each row
    gets its own gradient)."""
    tensor = tensor.detach()
    return tensor if tensor.shape[0] == batch else tensor.expand(batch, *tensor.shape[1:]).clone()
