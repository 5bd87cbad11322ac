"""A tiny served run built in code: a tiny Llama, two TopK dictionaries on its residual
stream, an example store collected from real text through the model, the viewer index, eval
JSON, a training log and explanations. Shared by the API and browser tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries import build
from sparselens.interpretation.examples import collect_examples
from sparselens.interpretation.windows import collect_windows
from sparselens.io.native import save_dictionary
from sparselens.models.hookpoints import capture, resolve
from sparselens.models.source import LoadedModel
from sparselens.server.index import build_index

HOOK = "resid.2"
N_LATENTS = 48
SCRIPT_TOKEN = "<script>window.PWNED=1</script><img src=x onerror='window.PWNED=2'>"
"""The display text given to the byte '~' in the index: a page that used innerHTML would run
it."""
TEXTS = [
    "The capital of France is Paris. Paris has the Eiffel Tower and the Louvre.",
    "def main():\n    return sum(x * x for x in range(10))  # squares",
    "In 1969 the first people walked on the Moon; Apollo 11 landed in July.",
    "Cats and dogs ~ sleep a lot. A cat sat on the mat while the dog ran far away.",
    "import numpy as np\nvalues = np.arange(12).reshape(3, 4) ~ print(values.sum())",
    "Rain in Spain stays mainly in the plain, said the professor ~ to Eliza Doolittle.",
] * 3


class ScriptTokenizer:
    """The model's byte tokenizer, except that '~' displays as `SCRIPT_TOKEN` (a corpus token
    with markup in it, for the escaping tests)."""

    def __init__(self, tokenizer: Any) -> None:
        self.inner = tokenizer
        self.all_special_ids = tokenizer.all_special_ids
        self.tilde = tokenizer.convert_tokens_to_ids("~")

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        from sparselens.interpretation.token_text import piece_text

        return [SCRIPT_TOKEN if i == self.tilde else piece_text(p, byte_level=True)
                for i, p in zip(ids, self.inner.convert_ids_to_tokens(ids))]


@dataclass
class ServedRun:
    folders: list[Path]
    tokens: torch.Tensor
    model: LoadedModel


def _token_table(model: LoadedModel, length: int = 48) -> torch.Tensor:
    tok = model.tokenizer
    rows = []
    for text in TEXTS:
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False).input_ids[:length - 1]
        ids += [tok.pad_token_id] * (length - len(ids))
        rows.append(ids)
    return torch.tensor(rows)


def _batches(model: LoadedModel, tokens: torch.Tensor) -> list[ActivationBatch]:
    hp = resolve(model.model, HOOK)[0]
    acts = capture(model.model, [hp], input_ids=tokens)[hp].float()
    n, length = tokens.shape
    seq = torch.arange(n).repeat_interleave(length)
    pos = torch.arange(length).repeat(n)
    flat = tokens.reshape(-1)
    keep = torch.nonzero((pos > 0) & (flat != model.tokenizer.pad_token_id)).squeeze(1)
    x = acts.reshape(n * length, -1)
    return [ActivationBatch({HOOK: x[idx]}, flat[idx], seq[idx], pos[idx])
            for idx in keep.split(97)]


def make_served_run(root: Path, model: LoadedModel) -> ServedRun:
    """Two dictionaries under `root` (run_a/sae, run_b/sae), each with what `serve` reads."""
    tokens = _token_table(model)
    batches = _batches(model, tokens)
    folders = []
    for i, (k, fvu, l0) in enumerate(((4, 0.31, 4.0), (8, 0.22, 8.0))):
        torch.manual_seed(10 + i)
        sae = build("topk", d_in=32, n_latents=N_LATENTS, k=k, hookpoint=HOOK,
                    model=model.name).eval()
        run = root / f"run_{'ab'[i]}"
        folder = save_dictionary(sae, run / "sae")
        examples = collect_examples(sae, batches, HOOK, n_top=6, n_quantile_samples=10)
        examples = collect_windows(sae, examples, batches, before=5, after=3)
        examples.save(run / "report")
        build_index(run / "report" / "examples.safetensors", tokens,
                    ScriptTokenizer(model.tokenizer))
        (folder / "eval.json").write_text(json.dumps(
            {"reconstruction": {"fvu": fvu, "l0": l0, "dead_fraction": 0.1},
             "spliced": {"loss_recovered": 0.9 - fvu}}))
        (folder / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "tokens": 512 * s, "loss": 2.0 / s, "fvu": 1 / (1 + s),
                        "l0": k, "dead_fraction": 0.05}) + "\n" for s in range(1, 30)))
        (folder / "explanations.jsonl").write_text(
            json.dumps({"latent": 3, "explanation": "the word Paris and <b>other</b> capitals",
                        "scores": {"detection": 0.81, "fuzzing": 0.74}}) + "\n"
            + json.dumps({"latent": 5, "explanation": "Python code indentation", "model": "qwen",
                          "scores": {"fuzzing": {"chance": 0.5, "explanation": {"value": 0.7},
                                                 "random": {"value": 0.5}}}}) + "\n"
            + "{not json\n")
        folders.append(folder)
    return ServedRun(folders, tokens, model)


def top_token_of(store_folder: Path, latent: int, tokens: torch.Tensor) -> int:
    """The token id at the latent's strongest example."""
    from safetensors import safe_open

    with safe_open(str(store_folder / "examples.safetensors"), "pt") as f:
        seq = int(f.get_tensor("top.seq_ids")[latent, 0])
        pos = int(f.get_tensor("top.positions")[latent, 0])
    return int(tokens[seq, pos])
