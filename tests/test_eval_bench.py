"""The bench pipeline end to end on a tiny model: records, skips with reasons, reuse, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparselens.cli.main import main
from sparselens.evaluation.results import read_results
from sparselens.evaluation.suite import check_bench_record

TRAIN = ["--n-latents", "64", "--dictionary", "k=4", "--n-tokens", "1024", "--batch-size",
         "128", "--init-tokens", "256", "--log.progress", "false", "--checkpoint.every-steps",
         "0"]
FAST = ["--tasks", "sentiment", "reference_section", "--max-per-class", "24",
        "--max-length", "24", "--absorption-words", "6", "--progress", "false"]


@pytest.fixture(scope="module")
def two_saes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    from conftest import make_tiny_llama, random_chunks
    from sparselens.data.harvest import HarvestConfig, harvest
    from sparselens.models.source import load_model

    root = tmp_path_factory.mktemp("bench")
    llama = make_tiny_llama()
    llama.model.save_pretrained(root / "model")
    llama.tokenizer.save_pretrained(root / "model")
    harvest(load_model(str(root / "model")), random_chunks(48, length=16), ["resid.1"],
            root / "cache", HarvestConfig(storage_dtype="float32", batch_size=8,
                                          shard_tokens=256, heldout_fraction=0.5,
                                          progress=False))
    saes = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        assert main(["train", str(root / "cache"), "--out", str(out), "--seed", str(seed),
                     *TRAIN]) == 0
        saes.append(out)
    return root / "cache", saes


def test_bench_writes_checked_records_and_reuses_results(two_saes, tmp_path: Path) -> None:
    cache, saes = two_saes
    out = tmp_path / "bench"
    args = ["bench", *map(str, saes), "--cache", str(cache), "--out", str(out), *FAST]
    assert main(args) == 0
    record = read_results(out / "seed0.json")
    check_bench_record(record)
    assert record["reconstruction"]["l0"] <= 4
    assert 0 < record["consistency"]["mean_pw_mcc"] <= 1
    assert 0 <= record["consistency"]["mean_fraction_matched"] <= 1
    assert set(record["sparse_probing"]["tasks"]) == {"sentiment", "reference_section"}
    assert "sae_top_50_accuracy" in record["sparse_probing"]
    # the byte tokenizer has no word tokens: absorption is skipped, with the reason
    assert "word tokens" in record["absorption"]["skipped"]
    assert "skipped" in record["scr"] or "scr_20" in record["scr"]
    assert (out / "index.html").exists() and (out / "pareto.png").exists()
    assert not any(record["bench"]["cached"].values())
    assert main(args) == 0  # the rerun reuses every metric
    again = read_results(out / "seed0.json")
    assert all(again["bench"]["cached"].values())
    assert again["sparse_probing"]["sae_top_1_accuracy"] == record["sparse_probing"][
        "sae_top_1_accuracy"]


def test_bench_refuses_a_dictionary_of_another_site(two_saes, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cache, saes = two_saes
    config = json.loads((saes[0] / "config.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "weights.safetensors").write_bytes((saes[0] / "weights.safetensors").read_bytes())
    config["config"]["hookpoint"] = "resid.3"
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["bench", str(moved), "--cache", str(cache), "--out", str(tmp_path / "b"),
                 "--suite", "geometry", "--progress", "false"]) != 0
    assert "resid.3" in capsys.readouterr().err


def test_one_class_user_task_is_skipped_with_reason(two_saes, tmp_path: Path) -> None:
    cache, saes = two_saes
    task = tmp_path / "one.csv"
    task.write_text("text,label\n" + "".join(f"sample {i},same\n" for i in range(20)))
    out = tmp_path / "b"
    assert main(["bench", str(saes[0]), "--cache", str(cache), "--out", str(out),
                 "--suite", "probing", "--tasks", "sentiment", "--task-files", str(task),
                 "--max-per-class", "24", "--max-length", "24", "--progress", "false"]) == 0
    record = read_results(out / "seed0.json")
    assert "two labels" in record["sparse_probing"]["skipped_tasks"]["one"]
    assert record["absorption"] is None


def test_report_rows_from_a_plain_eval_json(tmp_path: Path) -> None:
    from sparselens.evaluation.bench_page import evaluation_rows
    from sparselens.evaluation.results import results_record, write_results

    record = results_record({}, {}, {"l0": 12.0, "fvu": 0.2, "dead_fraction": 0.0}, None)
    record["absorption"] = {"skipped": "no word tokens"}
    write_results(tmp_path / "eval.json", record)
    rows = dict(evaluation_rows(tmp_path / "eval.json"))
    assert rows["L0"] == "12" and rows["FVU"] == "0.2"
    assert rows["absorption fraction"] == "skipped: no word tokens"
    assert "TPP (N=20)" not in rows


class FakeCache:
    """What `check_model_and_site` reads from a cache."""

    def __init__(self, model: str, widths: dict[str, int]) -> None:
        self.manifest = {"model": model}
        self.widths = widths
        self.hookpoints = list(widths)

    def resolve(self, hookpoint: str) -> str:
        if hookpoint not in self.widths:
            raise KeyError(hookpoint)
        return hookpoint

    def width(self, site: str) -> int:
        return self.widths[site]


def test_dictionary_data_mismatch_is_a_clear_error() -> None:
    from sparselens.dictionaries import build
    from sparselens.evaluation.suite import Entry, check_model_and_site

    dictionary = build("topk", d_in=16, n_latents=32, k=2, hookpoint="resid.1",
                       model="gemma-3-270m")
    entry = Entry("sae", Path("sae"), dictionary, "x")
    assert check_model_and_site(entry, FakeCache("gemma-3-270m", {"resid.1": 16})) == "resid.1"
    with pytest.raises(ValueError, match="trained on model 'gemma-3-270m'.*'qwen"):
        check_model_and_site(entry, FakeCache("qwen", {"resid.1": 16}))
    with pytest.raises(ValueError, match="expects width 16.*24 wide"):
        check_model_and_site(entry, FakeCache("gemma-3-270m", {"resid.1": 24}))
    with pytest.raises(ValueError, match="does not hold"):
        check_model_and_site(entry, FakeCache("gemma-3-270m", {"resid.2": 16}))


def test_a_nan_metric_is_refused() -> None:
    from sparselens.evaluation.results import results_record
    from sparselens.evaluation.suite import SECTIONS

    record = results_record({}, {}, None, None)
    record.update({"bench": {}, **{s: None for s in SECTIONS}})
    check_bench_record(record)
    record["tpp"] = {"tpp_20": float("nan")}
    with pytest.raises(ValueError, match=r"NaN in \['tpp.tpp_20'\]"):
        check_bench_record(record)


def test_single_dictionary_and_too_few_examples_are_skipped_with_reasons(
        two_saes, tmp_path: Path) -> None:
    cache, saes = two_saes
    task = tmp_path / "tiny.csv"  # two labels, but too few texts to split and probe
    task.write_text("text,label\nthe cat,a\nthe dog,b\na cow,a\n")
    out = tmp_path / "b"
    assert main(["bench", str(saes[0]), "--cache", str(cache), "--out", str(out),
                 "--suite", "probing", "consistency", "--tasks", "sentiment", "--task-files",
                 str(task), "--max-per-class", "24", "--max-length", "24",
                 "--progress", "false"]) == 0
    record = read_results(out / "seed0.json")
    check_bench_record(record)
    assert "two or more dictionaries" in record["consistency"]["skipped"]
    assert "tiny" in record["sparse_probing"]["skipped_tasks"]
    assert "sentiment" in record["sparse_probing"]["tasks"]


def test_synthetic_suite_trains_the_architecture(two_saes, tmp_path: Path) -> None:
    cache, saes = two_saes
    out = tmp_path / "syn"
    assert main(["bench", str(saes[0]), "--cache", str(cache), "--out", str(out),
                 "--suite", "synthetic", "--synthetic-tokens", "8192",
                 "--progress", "false"]) == 0
    record = read_results(out / "seed0.json")
    check_bench_record(record)
    synthetic = record["synthetic"]
    assert synthetic["architecture"] == "topk"
    assert synthetic["dictionary_k"] == 4 and synthetic["settings"]["k"] == 5
    assert 0 <= synthetic["fraction_recovered"] <= 1
    assert -1 <= synthetic["mean_max_cosine"] <= 1 and synthetic["l0"] <= 5
    assert record["sparse_probing"] is None  # only what was asked for
    assert (saes[0] / "bench.json").exists()  # the copy the report reads
