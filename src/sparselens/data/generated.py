"""Text the model writes itself, for training dictionaries on the model's own distribution.

The idea (from "FaithfulSAE"): activations on external text include inputs the model would never
produce, and features fitted to them may describe the dataset more than the model. Sampling from
BOS (or a tiny neutral prompt) needs no data at all and stays on the model's distribution.

Sampling is slow on a CPU, so documents are cached: each batch of documents is written as its own
JSONL file atomically and then ``state.json`` records the batch as done. Every batch draws from
its own generator seeded by ``(seed, batch_index)``, so an interrupted run resumed later yields
exactly the documents an uninterrupted run would have (on CPU, where the forward is
deterministic).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sparselens.core.atomic import atomic_open, atomic_write_json, read_json
from sparselens.data.chunking import start_token_id

if TYPE_CHECKING:
    from sparselens.models.source import LoadedModel

FORMAT = "sparselens-generated-v1"
STATE_FILE = "state.json"


@dataclass
class GenerationConfig:
    """How the model samples its own corpus (used when ``source`` is ``generated``)."""

    documents: int = 512
    """Number of documents to sample."""
    length: int = 256
    """Tokens sampled per document; a document ends earlier when the model emits EOS."""
    temperature: float = 1.0
    """Softmax temperature; 1.0 samples the model's own distribution, 0 is greedy."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    batch_size: int = 16
    """Documents sampled together in one batch (part of the cache identity: changing it
    changes the documents)."""
    prompt: str = ""
    """Text placed after BOS at the start of every document; empty samples from BOS alone."""

    def __post_init__(self) -> None:
        if self.documents < 1 or self.length < 1 or self.batch_size < 1:
            raise ValueError("generation documents, length and batch_size must be >= 1, got "
                             f"{self.documents}, {self.length}, {self.batch_size}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def n_batches(self) -> int:
        return -(-self.documents // self.batch_size)


class CorpusConfig(Protocol):
    """What generation reads of a `sparselens.data.corpus.CorpusConfig` (a structural type, so
    that the corpus module, which dispatches to this one, is not imported back)."""

    path: str | None
    seed: int
    generation: GenerationConfig


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed for one batch: independent of how many batches ran before it."""
    digest = hashlib.sha256(f"sparselens-generated:{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_next(logits: Tensor, temperature: float, top_p: float,
                generator: torch.Generator) -> Tensor:
    """One token id per row of ``(B, vocab)`` logits, drawn on the CPU for reproducibility."""
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs[mass_before >= top_p] = 0  # the top token always has mass_before 0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample_tokens(model: nn.Module, prompt_ids: list[int], n: int, length: int,
                  cfg: GenerationConfig, eos_id: int | None, generator: torch.Generator) -> Tensor:
    """``(n, length)`` sampled continuations of `prompt_ids` (rows stop being extended, and are
    filled with EOS, once they emit EOS)."""
    device = next(model.parameters()).device
    step_input = torch.tensor([prompt_ids] * n, device=device)
    out = torch.full((n, length), eos_id if eos_id is not None else 0, dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool)
    past = None
    for t in range(length):
        result = model(input_ids=step_input, past_key_values=past, use_cache=True,
                       logits_to_keep=1)
        past = result.past_key_values
        next_ids = sample_next(result.logits[:, -1], cfg.temperature, cfg.top_p, generator)
        out[:, t] = torch.where(finished, out[:, t], next_ids)
        if eos_id is not None:
            finished |= next_ids == eos_id
            if bool(finished.all()):
                break
        step_input = next_ids[:, None].to(device)
    return out


def _document(ids: Tensor, tokenizer: Any, eos_id: int | None) -> dict[str, Any]:
    tokens = ids.tolist()
    if eos_id is not None and eos_id in tokens:
        tokens = tokens[:tokens.index(eos_id)]
    return {"text": tokenizer.decode(tokens, skip_special_tokens=True), "ids": tokens}


def _settings(loaded: LoadedModel, cfg: CorpusConfig) -> dict[str, Any]:
    return {"model": loaded.name, "seed": cfg.seed, **asdict(cfg.generation)}


def _batch_file(out_dir: Path, index: int) -> Path:
    return out_dir / f"batch-{index:05d}.jsonl"


def _load_state(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    state_path = out_dir / STATE_FILE
    if not state_path.exists():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"{out_dir} is not empty and holds no {STATE_FILE}; choose an empty "
                             "or new folder for the generated corpus")
        return {"format": FORMAT, "settings": settings, "batches_done": 0, "documents_done": 0}
    state = read_json(state_path, "generated-corpus state")
    if state.get("settings") != settings:
        raise ValueError(f"{out_dir} was generated with settings {state.get('settings')}, not "
                         f"{settings}; resume with the same settings or use a new folder")
    return state


def generate_corpus(loaded: LoadedModel, cfg: CorpusConfig,
                    out_dir: str | Path | None = None) -> Path:
    """Sample ``cfg.generation.documents`` documents into `out_dir` (default ``cfg.path``),
    continuing a previous interrupted run in the same folder."""
    target = out_dir if out_dir is not None else cfg.path
    if not target:
        raise ValueError("generate_corpus needs an output folder: pass out_dir or set the "
                         "corpus path")
    folder = Path(target).expanduser()
    gen = cfg.generation
    state = _load_state(folder, _settings(loaded, cfg))
    tokenizer = loaded.tokenizer
    prompt_ids = [start_token_id(tokenizer)] + tokenizer(
        gen.prompt, add_special_tokens=False)["input_ids"]
    eos_id = tokenizer.eos_token_id
    for index in tqdm(range(state["batches_done"], gen.n_batches), desc="generating",
                      initial=state["batches_done"], total=gen.n_batches, disable=None):
        n = min(gen.batch_size, gen.documents - index * gen.batch_size)
        generator = torch.Generator().manual_seed(batch_seed(cfg.seed, index))
        ids = sample_tokens(loaded.model, prompt_ids, n, gen.length, gen, eos_id, generator)
        with atomic_open(_batch_file(folder, index), "w") as handle:
            for row in ids:
                handle.write(json.dumps(_document(row, tokenizer, eos_id)) + "\n")
        state.update(batches_done=index + 1, documents_done=state["documents_done"] + n)
        atomic_write_json(folder / STATE_FILE, state)
    return folder


def read_state(folder: str | Path) -> dict[str, Any]:
    """The progress record of a generated corpus, with errors that say what to do."""
    state_path = Path(folder).expanduser() / STATE_FILE
    if not state_path.exists():
        raise FileNotFoundError(f"no generated corpus in {state_path.parent} (no {STATE_FILE}); "
                                "create it with generate_corpus first")
    state = read_json(state_path, "generated-corpus state")
    if state.get("format") != FORMAT:
        raise ValueError(f"{state_path} is not a sparselens generated-corpus state")
    return state


def iter_generated(path: str | Path, needed: int | None = None) -> Iterator[str]:
    """The texts of a generated corpus in generation order. Refuses an unfinished cache unless
    its finished batches already hold `needed` documents."""
    folder = Path(path).expanduser()
    state = read_state(folder)
    total = state["settings"]["documents"]
    done = state["documents_done"]
    if done < total and (needed is None or needed > done):
        raise ValueError(f"generated corpus {folder} holds {done} of {total} documents; run "
                         "generate_corpus again with the same settings to finish it")
    files = [_batch_file(folder, i) for i in range(state["batches_done"])]
    return _read_batches(files)


def _read_batches(files: list[Path]) -> Iterator[str]:
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)["text"]
