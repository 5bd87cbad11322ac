"""The whole evaluation suite on one dictionary (default: the `make run` dictionary), timed.

Runs `run_bench` with the default `sparselens bench` settings on
``/work/main/runs/default/sae`` and its cache (override with --dictionary/--cache), with a
fresh metric cache so every metric is computed, and records the wall time of the model load
and of each metric (as measured by the suite) plus the total. Goal: under 15 minutes on 2 CPU
cores. The machine this runs on is shared with other jobs, so times are upper bounds.

Writes ``benchmarks/results/bench_suite.json`` (and the suite's own output under --out).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from sparselens.evaluation.bench import run_bench
from sparselens.evaluation.bench_page import headline_metrics
from sparselens.evaluation.suite import SuiteConfig
from sparselens.io.atomic import atomic_write_json
from sparselens.models.source import load_model

RESULTS = Path(__file__).parent / "results"
DEFAULT_RUN = Path("/work/main/runs/default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dictionary", type=Path, default=DEFAULT_RUN / "sae")
    parser.add_argument("--cache", type=Path, default=DEFAULT_RUN / "cache")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sparselens-bench-suite"))
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse earlier metric results (measures a rerun)")
    args = parser.parse_args()
    if args.out.exists() and not args.keep_cache:
        shutil.rmtree(args.out)
    start = time.perf_counter()
    import json

    model = json.loads((args.cache / "manifest.json").read_text())["model"]
    loaded = load_model(model, dtype="float32")
    load_seconds = time.perf_counter() - start
    cfg = SuiteConfig(progress=False)
    result = run_bench([args.dictionary], args.cache, args.out, cfg, loaded=loaded)
    total = time.perf_counter() - start
    (name, record), = result.records.items()
    seconds = record["bench"]["seconds"]
    print(f"{'metric':16s} {'seconds':>8s}")
    print(f"{'model load':16s} {load_seconds:8.1f}")
    for metric, value in seconds.items():
        print(f"{metric:16s} {value:8.1f}")
    print(f"{'total':16s} {total:8.1f}  (goal: 900 s on 2 cores)")
    headline = headline_metrics(record)
    for label, value in headline.items():
        print(f"  {label}: {value}")
    atomic_write_json(RESULTS / ("bench_suite_rerun.json" if args.keep_cache
                                 else "bench_suite.json"), {
        "dictionary": str(args.dictionary), "cache": str(args.cache),
        "threads": torch.get_num_threads(), "model_load_seconds": load_seconds,
        "metric_seconds": seconds, "total_seconds": total, "under_15_minutes": total < 900,
        "headline": headline, "config": record["bench"]["config"],
        "note": "shared machine (other jobs running); times are upper bounds"})
    print(f"wrote {RESULTS / 'bench_suite.json'}; page {result.page}")


if __name__ == "__main__":
    main()
