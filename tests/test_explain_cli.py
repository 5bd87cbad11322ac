"""`sparselens explain` end to end: a real llama.cpp server (the embedded gemma GGUF) as the
judge, killed mid-run and resumed; a server that is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import byte_tokenizer
from explain_helpers import rule_store
from sparselens.dictionaries import build
from sparselens.interpretation.store import store_folder
from sparselens.io.native import save_dictionary

ROOT = Path(__file__).resolve().parents[1]


def dictionary_with_store(tmp_path: Path) -> tuple[Path, Path]:
    """A 5-latent dictionary folder whose example store holds the rule latents, and a
    tokenizer folder for its contexts."""
    folder = tmp_path / "sae"
    save_dictionary(build("relu", d_in=5, n_latents=5), folder)
    examples, _ = rule_store()
    examples.save(store_folder(folder))
    tokenizer = tmp_path / "tokenizer"
    byte_tokenizer().save_pretrained(tokenizer)
    return folder, tokenizer


def explain_cmd(folder: Path, tokenizer: Path, llm: str, *extra: str,
                latents: str = "0:5") -> list[str]:
    return [sys.executable, "-m", "sparselens.cli.main", "explain", str(folder), "--latents",
            latents, "--llm", llm, "--tokenizer", str(tokenizer), "--n-examples", "4",
            "--n-test", "3", "--scorers", "detection,fuzzing", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE"}


def test_server_down_is_recorded_and_the_run_finishes(tmp_path):
    from sparselens.interpretation.llm.server import free_port

    folder, tokenizer = dictionary_with_store(tmp_path)
    done = subprocess.run(explain_cmd(folder, tokenizer, f"http://127.0.0.1:{free_port()}/v1",
                                      "--retries", "0"),
                          env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in
               (folder / "explanations" / "explanations.jsonl").read_text().splitlines()]
    status = {r["latent"]: r["status"] for r in records}
    assert status == {0: "llm_error", 1: "llm_error", 2: "dead", 3: "llm_error",
                      4: "llm_error"}
    assert "is the server running" in records[0]["error"]
    assert "4 llm_error" in done.stdout and "1 dead" in done.stdout


@pytest.mark.slow
def test_killed_run_resumes_from_the_cache_with_a_real_server(tmp_path):
    pytest.importorskip("xllamacpp", reason="make test installs it (sparselens[explain])")
    from sparselens.models.source import _embedded_gguf

    gguf = str(_embedded_gguf("gemma-3-270m"))
    folder, tokenizer = dictionary_with_store(tmp_path)
    cache = folder / "explanations" / "llm_cache"
    command = explain_cmd(folder, tokenizer, gguf, "--answer-tokens", "16", latents="0:3")
    process = subprocess.Popen(command, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(cache.rglob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its server, mid-run
    process.wait()
    before = len(list(cache.rglob("*.json")))
    assert before >= 2, "the run made no progress within 4 minutes"
    assert not (folder / "explanations" / "summary.json").exists()
    done = subprocess.run(command, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((folder / "explanations" / "summary.json").read_text())
    after = len(list(cache.rglob("*.json")))
    assert summary["llm_cache"]["misses"] == after - before  # nothing asked twice
    assert summary["llm_cache"]["hits"] > 0
    assert summary["status"].get("ok", 0) + summary["status"].get("unparsable", 0) == 2
    assert summary["model"].startswith("gguf:gemma-3-270m")
    records = [json.loads(line) for line in
               (folder / "explanations" / "explanations.jsonl").read_text().splitlines()]
    assert [r["latent"] for r in records] == [0, 1, 2]
