"""``sparselens serve`` end to end: harvest and report with the real commands, then the CLI in
its own process on a free port builds the viewer index from the run's cache and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import byte_tokenizer, free_port, random_chunks
from sparselens.dictionaries import build
from sparselens.io.native import save_dictionary


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_serve_command_builds_the_index_from_the_run_cache(tmp_path, tiny_llama):
    from sparselens.cli.main import main
    from sparselens.data.cache import ActivationCache
    from sparselens.data.harvest import HarvestConfig, harvest
    from sparselens.interpretation.examples import FeatureExamples
    from sparselens.interpretation.token_text import token_texts

    run = tmp_path / "run"
    harvest(tiny_llama, random_chunks(12), ["resid.1"], run / "cache",
            HarvestConfig(batch_size=4, shard_tokens=64, heldout_fraction=0.2, progress=False))
    save_dictionary(build("topk", d_in=32, n_latents=64, k=4, hookpoint="resid.1"), run / "sae")
    tokenizer_dir = tmp_path / "tokenizer"
    byte_tokenizer().save_pretrained(tokenizer_dir)
    assert main(["report", str(run / "sae"), "--cache", str(run / "cache"), "--out",
                 str(run / "report"), "--tokenizer", str(tokenizer_dir), "--before", "3"]) == 0
    assert not (run / "report" / "viewer_index.safetensors").exists()

    port = free_port()
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "sparselens.cli.main", "serve",
                               str(run / "sae"), "--tokenizer", str(tokenizer_dir), "--port",
                               str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                info = _get(f"http://127.0.0.1:{port}/api/info")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.3)
        assert info["dictionaries"][0]["name"] == "sae" and info["model"] is None
        assert info["dictionaries"][0]["has_contexts"]
        assert (run / "report" / "viewer_index.safetensors").exists()
        examples = FeatureExamples.load(run / "report")
        latent = int(examples.counts.argmax())
        page = _get(f"http://127.0.0.1:{port}/api/d/sae/feature/{latent}")
        tokens = ActivationCache.open(run / "cache").tokens()
        assert page["top"]
        for row in page["top"]:
            start = row["pos"] - row["centre"]
            ids = tokens[row["seq"], start:start + len(row["tokens"])].tolist()
            assert row["tokens"] == token_texts(byte_tokenizer(), ids)
            assert row["acts"][row["centre"]] == row["act"]
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert "sparselens viewer on http://127.0.0.1:" in server.stdout.read()
