"""The served viewer against dictionary size: open time, feature-page latency, RSS; and the
text playground's latency for a 128-token request on the embedded model.

For each width (default 4,096 / 16,384 / 65,536 latents, d=640 like gemma-3-270m) the script
writes a synthetic native TopK dictionary and a synthetic example store of the shape `sparselens
report` writes (20 top + 20 sampled firings per latent with 24+1+8-token activation windows,
counts and sums), plus a token table of 8,192 sequences x 128 tokens drawn from the gemma
vocabulary, and builds the viewer index once (timed separately). Then, per width, a fresh
process opens the dictionary (`open_stores`, index present) and requests, through the ASGI
app in-process (TestClient: routing, JSON and all), the feature page and the similar-latents
list of 50 random latents, and a token search. RSS is read from /proc after opening and after
the requests. The playground is timed on gemma-3-270m with a 16,384-latent random TopK at
resid.6 (codes are random, the work is real: the forward to block 6 and the encode).

Prints a table and writes ``benchmarks/results/serve.json``. ``--quick`` runs small widths.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

D_MODEL = 640
N_TOP = 20
N_SAMPLES = 20
BEFORE, AFTER = 24, 8
N_SEQS, CONTEXT = 8192, 128
RESULTS = Path(__file__).parent / "results"


def rss_mb(kind: str = "VmRSS") -> float:
    """Resident memory from /proc: ``VmRSS`` (all), ``RssAnon`` (heap: what the server
    allocated) or ``RssFile`` (pages of memory-mapped files: page cache the kernel can drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_fixture(folder: Path, n_latents: int, tokens: torch.Tensor, tokenizer: Any) -> float:
    """Dictionary + example store + index in `folder`; returns the index build seconds."""
    from sparselens.dictionaries import build
    from sparselens.interpretation.examples import ExampleSet, FeatureExamples
    from sparselens.io.native import save_dictionary
    from sparselens.server.index import build_index

    gen = torch.Generator().manual_seed(n_latents)
    sae = build("topk", d_in=D_MODEL, n_latents=n_latents, k=32, hookpoint="resid.6",
                model="gemma-3-270m")
    save_dictionary(sae, folder / "sae")
    width = BEFORE + 1 + AFTER

    def slots(n_slots: int, descending: bool) -> ExampleSet:
        seq = torch.randint(0, N_SEQS, (n_latents, n_slots), generator=gen)
        pos = torch.randint(1, CONTEXT, (n_latents, n_slots), generator=gen)
        act = torch.rand(n_latents, n_slots, generator=gen).sort(dim=1,
                                                                 descending=descending).values
        windows = torch.rand(n_latents, n_slots, width, generator=gen) * (
            torch.rand(n_latents, n_slots, width, generator=gen) < 0.2)
        windows[:, :, BEFORE] = act
        return ExampleSet(seq, pos, act, windows)

    counts = torch.randint(1, 100_000, (n_latents,), generator=gen)
    examples = FeatureExamples("resid.6", N_SEQS * CONTEXT, counts, counts.double() * 3.0,
                               slots(N_TOP, True), slots(N_SAMPLES, False), window=(BEFORE, AFTER))
    examples.save(folder / "sae")
    start = time.perf_counter()
    build_index(folder / "sae" / "examples.safetensors", tokens, tokenizer)
    return time.perf_counter() - start


def measure_size(folder: Path, n_requests: int = 50) -> dict[str, Any]:
    """In this (fresh) process: open, then time feature pages; RSS before and after."""
    from starlette.testclient import TestClient

    from sparselens.server.launch import build_app, open_stores

    base_rss = rss_mb()
    start = time.perf_counter()
    stores = open_stores([folder / "sae"])
    open_s = time.perf_counter() - start
    client = TestClient(build_app(stores), base_url="http://127.0.0.1")
    client.get("/api/info")
    open_rss = rss_mb()
    anon_open = rss_mb("RssAnon")
    n = stores[0].n_latents
    latents = torch.randint(0, n, (n_requests,), generator=torch.Generator().manual_seed(1))

    def timed(path: str) -> float:
        t = time.perf_counter()
        response = client.get(path)
        assert response.status_code == 200, response.text
        return time.perf_counter() - t

    timed("/api/d/sae/feature/0")  # first request: imports, thread pool
    feature = [timed(f"/api/d/sae/feature/{int(j)}") for j in latents]
    similar = [timed(f"/api/d/sae/feature/{int(j)}/similar") for j in latents[:10]]
    overview = timed("/api/overview")
    search = timed("/api/search?q=%20the")
    return {"n_latents": n, "open_s": open_s, "rss_base_mb": base_rss, "rss_open_mb": open_rss,
            "rss_after_mb": rss_mb(), "rss_anon_open_mb": anon_open,
            "rss_anon_after_mb": rss_mb("RssAnon"), "rss_file_after_mb": rss_mb("RssFile"),
            "feature_median_ms": 1000 * statistics.median(feature),
            "feature_p95_ms": 1000 * sorted(feature)[int(0.95 * len(feature)) - 1],
            "similar_median_ms": 1000 * statistics.median(similar),
            "overview_ms": 1000 * overview, "token_search_ms": 1000 * search,
            "examples_file_mb": (folder / "sae" / "examples.safetensors").stat().st_size / 2**20,
            "index_file_mb": (folder / "sae" / "viewer_index.safetensors").stat().st_size / 2**20}


def measure_playground(n_latents: int, repeats: int = 5) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from sparselens.dictionaries import build
    from sparselens.io.native import save_dictionary
    from sparselens.models.source import load_model
    from sparselens.server.launch import build_app, open_stores

    model = load_model("gemma-3-270m", dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        save_dictionary(build("topk", d_in=D_MODEL, n_latents=n_latents, k=32,
                              hookpoint="resid.6", model="gemma-3-270m"), Path(tmp) / "sae")
        stores = open_stores([Path(tmp) / "sae"])
        client = TestClient(build_app(stores, model), base_url="http://127.0.0.1")
        prose = " ".join((__doc__ or "").split()) * 2  # real English, cut to 127 tokens + BOS
        ids = model.tokenizer(prose, add_special_tokens=False).input_ids[:127]
        text = model.tokenizer.decode(ids)
        n_text = len(model.tokenizer(text).input_ids)
        body = {"text": text, "dictionary": "sae", "latent": 3}
        client.post("/api/playground", json=body)  # warm-up: builds the lens, loads weights
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            response = client.post("/api/playground", json=body)
            times.append(time.perf_counter() - t)
            assert response.status_code == 200, response.text
        t = time.perf_counter()
        client.post("/api/steer", json={"prompt": "My favourite city is", "max_new_tokens": 16,
                                        "edits": [{"dictionary": "sae", "latent": 3,
                                                   "coef": 8.0}]})
        steer_ms = 1000 * (time.perf_counter() - t)
    return {"n_latents": n_latents, "request_tokens": n_text,
            "median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
            "steer_16_tokens_twice_ms": steer_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--quick", action="store_true", help="small widths, no playground")
    parser.add_argument("--no-playground", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_size(Path(args.child))))
        return
    torch.set_num_threads(2)
    sizes = [1024, 4096] if args.quick else args.sizes
    from sparselens.server.index import tokenizer_for

    tokenizer = tokenizer_for("gemma-3-270m")
    tokens = torch.randint(2, 262_000, (N_SEQS, CONTEXT), generator=torch.Generator()
                           .manual_seed(0))
    tokens[:, 0] = tokenizer.bos_token_id
    tokens[:, 1::7] = tokenizer(" the", add_special_tokens=False).input_ids[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / str(n)
            index_s = make_fixture(folder, n, tokens, tokenizer)
            child = subprocess.run([sys.executable, __file__, "--child", str(folder)],
                                   capture_output=True, text=True, check=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "2"})
            row = json.loads(child.stdout.strip().splitlines()[-1]) | {"index_build_s": index_s}
            rows.append(row)
            print(f"{n:>7} latents: open {row['open_s'] * 1000:7.1f} ms | feature median "
                  f"{row['feature_median_ms']:6.1f} ms p95 {row['feature_p95_ms']:6.1f} | "
                  f"similar {row['similar_median_ms']:6.1f} ms | RSS open "
                  f"{row['rss_open_mb']:4.0f} MB after {row['rss_after_mb']:4.0f} MB (heap "
                  f"{row['rss_anon_open_mb']:4.0f} -> {row['rss_anon_after_mb']:4.0f}) | store "
                  f"{row['examples_file_mb']:6.0f} MB | index build {index_s:5.1f} s",
                  flush=True)
    playground = None
    if not (args.quick or args.no_playground):
        playground = measure_playground(16384)
        print(f"playground: {playground['request_tokens']} tokens, median "
              f"{playground['median_ms']:.0f} ms (min {playground['min_ms']:.0f}); "
              f"steering (2 x 16 tokens) {playground['steer_16_tokens_twice_ms']:.0f} ms")
    result = {"sizes": rows, "playground": playground, "load_average": os.getloadavg(),
              "cpu_count": os.cpu_count(), "note": "2 shared cores; other agents were running"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
