"""Shared fixtures: tiny models built from configs in code, and the embedded model.

The tiny models have random weights and a byte-level tokenizer (every byte one token, no
merges), so they load in milliseconds and never touch the network. Their architectures are
the real Hugging Face classes, so hookpoints resolve exactly as on full-size checkpoints.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sparselens.models.source import LoadedModel

TINY_CONTEXT = 16


def byte_tokenizer() -> Any:
    """A fast tokenizer whose vocabulary is the 256 bytes plus ``<pad>``, ``<bos>``, ``<eos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")


def _tiny(build: Callable[[], torch.nn.Module], name: str, seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    model = build().eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=byte_tokenizer(), name=name)


def make_tiny_llama(seed: int = 0) -> LoadedModel:
    """A 4-block Llama (RMSNorm, rotary, gated MLP), d_model 32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    return _tiny(lambda: LlamaForCausalLM(config), f"tiny-llama-{seed}", seed)


def make_tiny_gpt2() -> LoadedModel:
    """A 3-block GPT-2 (LayerNorm, learned positions, Conv1D MLP), d_model 24."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=259, n_embd=24, n_layer=3, n_head=4, n_positions=64,
                        bos_token_id=1, eos_token_id=2)
    return _tiny(lambda: GPT2LMHeadModel(config), "tiny-gpt2", 0)


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    """Tiny random Llama with a byte tokenizer (shared; do not modify its weights)."""
    return make_tiny_llama()


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    """Tiny random GPT-2 with a byte tokenizer (shared; do not modify its weights)."""
    return make_tiny_gpt2()


@pytest.fixture(scope="session")
def gemma() -> LoadedModel:
    """The embedded gemma-3-270m in float32 (loaded once per test session; slow tests only)."""
    from sparselens.models.source import load_model

    return load_model("gemma-3-270m", dtype="float32")


def random_chunks(n: int, length: int = TINY_CONTEXT, seed: int = 0, vocab: int = 259,
                  bos_id: int = 1) -> list:
    """`n` chunks of random byte tokens, each starting with a BOS marked special.

    Uses the data helper's `Chunk` when it exists; the harvest only needs ``.ids``,
    ``.special`` and ``.doc_id``.
    """
    try:
        from sparselens.data.chunking import Chunk
    except ImportError:  # pragma: no cover - the chunking module is written concurrently
        from types import SimpleNamespace as Chunk  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for index in range(n):
        ids = torch.randint(3, vocab, (length,), generator=gen)
        ids[0] = bos_id
        special = torch.zeros(length, dtype=torch.bool)
        special[0] = True
        chunks.append(Chunk(ids=ids, special=special, doc_id=index // 2))
    return chunks


@pytest.fixture(scope="session")
def make_chunks() -> Callable[..., list]:
    """Factory for random chunks: ``make_chunks(n, length=16, seed=0, vocab=259, bos_id=1)``."""
    return random_chunks


@pytest.fixture(scope="session")
def tiny_llama_b() -> LoadedModel:
    """A second tiny Llama, same shapes and tokenizer, other weights (for model diffing)."""
    return make_tiny_llama(seed=1)


@pytest.fixture(autouse=True)
def float32_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`autocast="auto"` (the trainer's default) and ``model_dtype="auto"`` pick bf16 on
    AMX/AVX-512-BF16 CPUs and float32 elsewhere; tests see float32 on every machine unless they
    ask for bf16, so their results do not depend on the CPU they run on."""
    monkeypatch.setattr("sparselens.training.precision.fast_bfloat16", lambda device: None)
    monkeypatch.setattr("sparselens.core.hardware.fast_bfloat16", lambda device: None)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: extra threads only add synchronisation on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` by name, for byte-for-byte comparisons of two caches."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def free_port() -> int:
    """A TCP port on localhost that is free now (for a test's process group)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_as_rank(rank: int, world: int, port: int) -> None:
    """Set the environment `torchrun` would give worker `rank` of `world` on localhost (call
    it in a spawned worker), with one thread so two ranks share two cores without contention."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def fine_tune_embedding_offset(model: torch.nn.Module, tokens: list[int], ids: torch.Tensor,
                               steps: int, lr: float, batch_size: int) -> torch.Tensor:
    """Language modelling on the sequences `ids`, training only one vector added to the (model-
    scaled) input embeddings of `tokens` (embedding-offset tuning); returns the vector. The
    model's own weights are neither changed nor given gradients."""
    embedding = model.get_input_embeddings()
    selected = torch.zeros(embedding.weight.shape[0], 1)
    selected[tokens] = 1.0
    offset = torch.zeros(embedding.weight.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=lr)
    gen = torch.Generator().manual_seed(0)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            batch = ids[torch.randint(ids.shape[0], (batch_size,), generator=gen)]
            inputs = embedding(batch) + selected[batch] * offset
            loss = model(inputs_embeds=inputs, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return offset.detach()
