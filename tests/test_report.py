"""The report folder: data, plots, metrics, token text, errors, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import byte_tokenizer, random_chunks
from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries import Dictionary, build
from sparselens.interpretation.examples import FeatureExamples, collect_examples
from sparselens.interpretation.plots import read_metrics_log, training_curves_png
from sparselens.interpretation.report import write_report
from sparselens.interpretation.report_data import flatten_metrics, headline_metrics
from sparselens.interpretation.token_text import piece_text, token_texts
from sparselens.interpretation.windows import collect_windows
from sparselens.io.native import save_dictionary

HOOK = "resid.3"
WORDS = ["<bos>", "▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁dog", "▁ran", "▁far", "<0x0A>",
         "▁▁", ","]
"""Vocabulary of the fake SentencePiece tokenizer; id 0 is the special BOS."""
CAT = WORDS.index("▁cat")
N_DEAD = 3


class WordTokenizer:
    """The two methods the report needs from a tokenizer, over `WORDS`."""

    all_special_ids = [0]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [WORDS[i] for i in ids]


def word_tokens(n_seqs: int = 30, length: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, len(WORDS), (n_seqs, length), generator=gen)
    tokens[:, 0] = 0
    return tokens


def word_detector() -> Dictionary:
    """A ReLU dictionary whose feature j fires exactly on token j (one-hot inputs scaled by
    1..2, threshold 0.5), plus `N_DEAD` features that never fire."""
    vocab = len(WORDS)
    dictionary = build("relu", d_in=vocab, n_latents=vocab + N_DEAD, hookpoint=HOOK)
    with torch.no_grad():
        dictionary.W_enc.zero_()
        dictionary.W_enc[:, :vocab] = torch.eye(vocab)
        dictionary.b_enc.fill_(-0.5)
        dictionary.b_enc[vocab:] = -10.0
        dictionary.b_dec.zero_()
    return dictionary.eval()


def word_batches(tokens: torch.Tensor, batch_size: int = 64) -> list[ActivationBatch]:
    """One-hot activations of varying strength, BOS rows left out like in a real cache."""
    n_seqs, length = tokens.shape
    seq = torch.arange(n_seqs).repeat_interleave(length)
    pos = torch.arange(length).repeat(n_seqs)
    keep = pos > 0
    strength = 1 + torch.rand(n_seqs * length, generator=torch.Generator().manual_seed(1))
    x = torch.nn.functional.one_hot(tokens.reshape(-1), len(WORDS)).float() * strength[:, None]
    rows = torch.nonzero(keep).squeeze(1)
    rows = rows[torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(2))]
    return [ActivationBatch({HOOK: x[idx]}, tokens.reshape(-1)[idx], seq[idx], pos[idx])
            for idx in rows.split(batch_size)]


def make_report(out: Path, metrics: dict | None = None,
                train_log: Path | None = None) -> tuple[Path, FeatureExamples, torch.Tensor]:
    """A small complete report (used by the browser test too)."""
    tokens = word_tokens()
    dictionary = word_detector()
    examples = collect_examples(dictionary, word_batches(tokens), HOOK, n_top=8,
                                n_quantile_samples=10)
    examples = collect_windows(dictionary, examples, word_batches(tokens, 50), before=6,
                               after=3)
    index = write_report(out, dictionary=dictionary, examples=examples, tokens=tokens,
                         tokenizer=WordTokenizer(), metrics=metrics or {"fvu": 0.25},
                         train_log_path=train_log, title="Tiny <word> report")
    return index, examples, tokens


def read_data(folder: Path) -> dict:
    text = (folder / "data.js").read_text()
    prefix = "window.SPARSELENS_REPORT = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def test_report_folder_holds_the_data(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "tokens": 100 * s, "loss": 1 / s, "fvu": 0.5,
                                       "l0": 3.0, "dead_fraction": 0.1}) + "\n"
                           for s in range(1, 6)))
    metrics = {"reconstruction": {"fvu": 0.2, "l0": 3.5, "mse": float("nan")},
               "spliced": {"loss_recovered": 0.9}, "latent_density": torch.zeros(4)}
    index, examples, tokens = make_report(tmp_path / "report", metrics, log)
    folder = index.parent
    assert index.name == "index.html"
    for png in ("training_curves.png", "feature_density.png", "max_activation.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "metrics.json").read_text())  # strict JSON: NaN became null
    assert saved["reconstruction"]["mse"] is None and "latent_density" not in saved
    never_fired = N_DEAD + 1  # the BOS detector too: BOS rows are not stored
    assert saved["examples"]["dead_fraction"] == pytest.approx(never_fired / (len(WORDS) + N_DEAD))

    data = read_data(folder)
    assert [c["label"] for c in data["headline"]][:3] == ["FVU", "L0", "Dead latents %"]
    assert len(data["features"]) == len(WORDS) + N_DEAD
    assert data["features"][-1] == {"i": len(WORDS) + N_DEAD - 1, "n": 0}
    cat = data["features"][CAT]
    assert cat["n"] == int((tokens[:, 1:] == CAT).sum())
    assert cat["max"] == pytest.approx(float(examples.max_activation[CAT]), rel=1e-3)
    vocab, spans = data["vocab"], {s[0]: s for s in data["seqs"]}
    for seq, pos, act, window in cat["top"]:
        start = spans[seq][1]
        assert vocab[spans[seq][2][pos - start]] == " cat"
        assert window[0::2].count(6) == 1  # the example token (offset `before`) is non-zero
        assert window[window.index(6) + 1] == pytest.approx(act)
        assert all(vocab[spans[seq][2][pos - 6 + o - start]] == " cat" for o in window[0::2])
    assert {q[0] for q in cat["q"]} == set(range(5))  # samples spread over all quantile bins
    assert "\n" in vocab  # the byte-fallback newline piece decoded

    page = index.read_text()
    assert "<title>Tiny &lt;word&gt; report</title>" in page
    assert '<script src="data.js"></script>' in page and "fetch(" not in page
    assert "http://" not in page and "https://" not in page  # nothing to download


def test_report_without_windows_marks_the_example_token(tmp_path):
    tokens = word_tokens(6, 12)
    dictionary = word_detector()
    examples = collect_examples(dictionary, word_batches(tokens), HOOK, n_top=3)
    write_report(tmp_path, dictionary=dictionary, examples=examples, tokens=tokens,
                 tokenizer=WordTokenizer(), metrics={})
    data = read_data(tmp_path)
    assert data["has_windows"] is False and data["window"] == [24, 8]
    seq, pos, act, window = data["features"][CAT]["top"][0]
    assert window == [24, act]


def test_report_refuses_mismatched_inputs(tmp_path):
    tokens = word_tokens(6, 12)
    dictionary = word_detector()
    examples = collect_examples(dictionary, word_batches(tokens), HOOK, n_top=3)
    with pytest.raises(ValueError, match="token table has only 2 sequences"):
        write_report(tmp_path, dictionary=dictionary, examples=examples, tokens=tokens[:2],
                     tokenizer=WordTokenizer(), metrics={})
    with pytest.raises(ValueError, match="dictionary has 20"):
        write_report(tmp_path, dictionary=build("relu", d_in=len(WORDS), n_latents=20),
                     examples=examples, tokens=tokens, tokenizer=WordTokenizer(), metrics={})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_report(tmp_path / "file", dictionary=dictionary, examples=examples, tokens=tokens,
                     tokenizer=WordTokenizer(), metrics={})
    with pytest.raises(FileNotFoundError, match="training log"):
        write_report(tmp_path / "r", dictionary=dictionary, examples=examples, tokens=tokens,
                     tokenizer=WordTokenizer(), metrics={}, train_log_path=tmp_path / "none")


def test_token_text_for_sentencepiece_and_byte_level_pieces():
    assert piece_text("▁the", byte_level=False) == " the"
    assert piece_text("▁▁", byte_level=False) == "  "
    assert piece_text("<0x0A>", byte_level=False) == "\n"
    assert piece_text("<0xE2>", byte_level=False) == "\\xe2"
    tokenizer = byte_tokenizer()  # GPT-2 style byte-level pieces, one byte per token
    ids = tokenizer(" é\n", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4  # space, two UTF-8 bytes of é, newline
    assert token_texts(tokenizer, ids) == [" ", "\\xc3", "\\xa9", "\n"]
    assert token_texts(tokenizer, [tokenizer.bos_token_id]) == ["<bos>"]


def test_metrics_are_flattened_and_headlined():
    flat = flatten_metrics({"a": {"fvu": 0.5, "n": 3, "bad": float("inf"), "name": "x"},
                            "dead_fraction": 0.25, "spliced": {"kl_spliced": 0.1}})
    assert flat == {"a.fvu": 0.5, "a.n": 3, "a.bad": None, "a.name": "x",
                    "dead_fraction": 0.25, "spliced.kl_spliced": 0.1}
    cards = {c["label"]: c["value"] for c in headline_metrics(flat)}
    assert cards == {"FVU": 0.5, "Dead latents %": 25.0, "KL divergence": 0.1}


def test_training_log_reading(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "tokens": 10, "fvu": 0.9}\n{"step": 2, "tokens": 20, "fv')
    assert read_metrics_log(log) == [{"step": 1, "tokens": 10, "fvu": 0.9}]  # torn tail
    assert training_curves_png(read_metrics_log(log))[:4] == b"\x89PNG"
    assert training_curves_png([{"step": 1, "unrelated": 2.0}]) is None
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2 is not valid JSON"):
        read_metrics_log(log)


def test_cli_report_end_to_end(tmp_path, tiny_llama):
    from sparselens.cli.main import main
    from sparselens.data.harvest import HarvestConfig, harvest

    cache = tmp_path / "cache"
    harvest(tiny_llama, random_chunks(12), ["resid.1"], cache,
            HarvestConfig(batch_size=4, shard_tokens=64, heldout_fraction=0.2, progress=False))
    checkpoint = tmp_path / "sae"
    save_dictionary(build("topk", d_in=32, n_latents=64, k=4, hookpoint="resid.1"), checkpoint)
    (checkpoint / "metrics.jsonl").write_text('{"step": 1, "tokens": 64, "fvu": 0.8}\n')
    tokenizer_dir = tmp_path / "tokenizer"
    byte_tokenizer().save_pretrained(tokenizer_dir)
    code = main(["report", str(checkpoint), "--cache", str(cache), "--tokenizer",
                 str(tokenizer_dir), "--batch-size", "50", "--n-top", "4", "--before", "3"])
    assert code == 0
    out = checkpoint / "report"
    data = read_data(out)
    assert data["meta"]["hookpoint"] == "resid.1" and data["window"] == [3, 8]
    assert data["meta"]["n_tokens"] == 12 * 15  # every non-BOS token of every chunk
    assert (out / "training_curves.png").exists()
    stored = FeatureExamples.load(out)
    assert stored.top.windows is not None and stored.n_features == 64
    partial = tmp_path / "partial"
    assert main(["report", str(checkpoint), "--cache", str(cache), "--tokenizer",
                 str(tokenizer_dir), "--batch-size", "50", "--max-tokens", "60", "--split",
                 "train", "--out", str(partial)]) == 0
    assert read_data(partial)["meta"]["n_tokens"] == 60  # cut at --max-tokens exactly
    assert main(["report", str(checkpoint), "--cache", str(tmp_path / "nowhere")]) == 1


def test_largest_activation_histogram_has_log_bins() -> None:
    import numpy as np

    from sparselens.interpretation.plots import log_bins, max_activation_histogram_png

    values = np.array([1e-3, 0.5, 2.0, 1e3])
    bins = log_bins(values, n_bins=6)
    assert bins[0] == pytest.approx(1e-3) and bins[-1] == pytest.approx(1e3)
    np.testing.assert_allclose(np.diff(np.log10(bins)), 1.0)  # equal widths in log scale
    single = log_bins(np.array([4.0, 4.0]))
    assert single[0] < 4.0 < single[-1]
    for acts in (torch.tensor([0.0, 1e-3, 0.2, 5.0, 300.0]), torch.tensor([-2.0, 3.0]),
                 torch.zeros(3)):
        assert max_activation_histogram_png(acts).startswith(b"\x89PNG")
