"""The pipelines are library functions returning result objects (the CLI only prints them):
`run` end to end on a tiny model saved to disk, and `train_on_cache`'s resume and reuse."""

from __future__ import annotations

import random

import pytest

from conftest import make_tiny_llama
from sparselens.data.cache import ActivationCache
from sparselens.data.corpus import CorpusConfig
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.pipelines.run import RunConfig, RunResult, run
from sparselens.pipelines.train import TrainResult, train_on_cache
from sparselens.training.config import LogConfig, TrainConfig

WORDS = ["the", "cat", "sees", "a", "red", "house", "and", "then", "walks", "over", "river"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    loaded = make_tiny_llama(seed=0)
    loaded.model.save_pretrained(root / "model")
    loaded.tokenizer.save_pretrained(root / "model")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for index in range(40):
        (corpus / f"doc{index}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(80)))
    return root


def test_run_returns_its_results_and_a_rerun_redoes_nothing(model_dir, tmp_path) -> None:
    cfg = RunConfig(out=str(tmp_path / "run"), model=str(model_dir / "model"), hookpoint="resid.1",
                    corpus=CorpusConfig(source="text", path=str(model_dir / "corpus")),
                    harvest_tokens=4000, context_len=32, model_dtype="float32", n_latents=64,
                    k=4, train_tokens=2048, batch_size=128, eval_sequences=2,
                    report_tokens=1000)
    stages: list[str] = []
    result = run(cfg, on_stage=lambda index, name, where: stages.append(name))
    assert isinstance(result, RunResult)
    assert stages == ["harvest", "train", "evaluate", "report"]
    recon = result.evaluation["reconstruction"]
    assert recon["n_tokens"] > 0 and 0 <= recon["fvu"] < 1.5 and recon["l0"] <= 4
    assert result.evaluation["spliced"]["n_predictions"] > 0
    assert result.report.is_file() and (result.dictionary / "eval.json").is_file()
    assert result.summary().startswith("FVU ") and "held-out tokens" in result.summary()

    weights = result.dictionary / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = run(cfg)
    assert weights.stat().st_mtime_ns == before  # the finished training is reused
    assert again.evaluation["reconstruction"]["fvu"] == recon["fvu"]


def test_train_on_cache_resumes_reuses_and_refuses_changed_options(tiny_llama, make_chunks,
                                                                   tmp_path) -> None:
    harvest(tiny_llama, make_chunks(24), ["resid.1"], tmp_path / "cache",
            HarvestConfig(storage_dtype="float32", batch_size=4, progress=False))
    cache = ActivationCache.open(tmp_path / "cache")

    def config(**changes) -> TrainConfig:
        fields = dict(architecture="topk", n_latents=32, dictionary={"k": 2}, n_tokens=640,
                      batch_size=64, hookpoint="model.layers.1", log=LogConfig(progress=False))
        return TrainConfig(**(fields | changes))

    first = train_on_cache(config(), cache, tmp_path / "sae")
    assert isinstance(first, TrainResult) and first.steps == 10 and first.resumed_at is None
    assert first.dictionary.cfg.hookpoint == "resid.1"  # the cache's name for it
    reused = train_on_cache(config(), cache, tmp_path / "sae", reuse=True)
    assert reused.steps is None
    with pytest.raises(ValueError, match="other options .*n_latents"):
        train_on_cache(config(n_latents=64), cache, tmp_path / "sae", reuse=True)
