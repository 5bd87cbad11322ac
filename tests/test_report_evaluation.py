"""The HTML report's evaluation section: shown from the bench JSON beside the dictionary, absent
(without error) when there is none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import byte_tokenizer, random_chunks
from sparselens.dictionaries import build
from sparselens.evaluation.bench_page import evaluation_section
from sparselens.evaluation.results import results_record, write_results
from sparselens.interpretation.report_evaluation import evaluation_payload
from sparselens.io.native import save_dictionary


def read_data(folder: Path) -> dict:
    text = (folder / "data.js").read_text()
    prefix = "window.SPARSELENS_REPORT = "
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def bench_record() -> dict:
    record = results_record({"name": "sae"}, {}, {"l0": 4.0, "fvu": 0.25, "dead_fraction": 0.125},
                            None)
    record["sparse_probing"] = {"sae_top_1_accuracy": 0.71234, "sae_top_5_accuracy": 0.8,
                                "llm_accuracy": 0.93, "tasks": {"sentiment": {"x": 1.0}}}
    record["absorption"] = {"skipped": "the tokenizer has no word tokens"}
    record["tpp"] = None
    record["bench"] = {"seconds": {"probing": 12.5, "absorption": 0.1}}
    return record


def test_section_from_a_bench_json(tmp_path: Path) -> None:
    write_results(tmp_path / "bench.json", bench_record())
    section = evaluation_payload(evaluation_section(tmp_path / "bench.json"))
    headline = dict(section["headline"])
    assert headline["FVU"] == "0.25" and headline["sparse probing top-1 acc."] == "0.7123"
    assert headline["absorption fraction"].startswith("skipped: the tokenizer")
    assert "TPP (N=20)" not in headline  # not run: left out
    by_name = {s["name"]: s for s in section["sections"]}
    assert set(by_name) == {"reconstruction", "sparse_probing", "absorption"}
    probing = dict(by_name["sparse_probing"]["rows"])
    assert probing == {"sae_top_1_accuracy": 0.7123, "sae_top_5_accuracy": 0.8,
                       "llm_accuracy": 0.93}  # nested per-task detail left out
    assert by_name["sparse_probing"]["seconds"] == 12.5
    assert by_name["absorption"]["skipped"] == "the tokenizer has no word tokens"
    assert evaluation_payload(None) is None
    with pytest.raises(ValueError, match="headline"):
        evaluation_payload({"sections": []})


def test_cli_report_shows_the_bench_beside_the_dictionary(tmp_path: Path, tiny_llama) -> None:
    from sparselens.cli.main import main
    from sparselens.data.harvest import HarvestConfig, harvest

    cache = tmp_path / "cache"
    harvest(tiny_llama, random_chunks(8), ["resid.1"], cache,
            HarvestConfig(batch_size=4, shard_tokens=64, heldout_fraction=0.25, progress=False))
    checkpoint = tmp_path / "sae"
    save_dictionary(build("topk", d_in=32, n_latents=16, k=2, hookpoint="resid.1"), checkpoint)
    tokenizer = tmp_path / "tokenizer"
    byte_tokenizer().save_pretrained(tokenizer)
    args = ["report", str(checkpoint), "--cache", str(cache), "--tokenizer", str(tokenizer),
            "--n-top", "2", "--n-quantile-samples", "2"]

    assert main([*args, "--out", str(tmp_path / "plain")]) == 0  # no bench.json: no section
    assert read_data(tmp_path / "plain")["evaluation"] is None
    page = (tmp_path / "plain" / "index.html").read_text()
    assert 'id="evaluation"' in page and "DATA.evaluation" in page  # hidden, script inlined

    write_results(checkpoint / "bench.json", bench_record())
    assert main([*args, "--out", str(tmp_path / "with")]) == 0
    shown = read_data(tmp_path / "with")["evaluation"]
    assert dict(shown["headline"])["sparse probing top-5 acc."] == "0.8"
    assert shown["file"] == str((checkpoint / "bench.json").resolve())

    assert main([*args, "--out", str(tmp_path / "x"), "--bench", str(tmp_path / "none")]) == 1
