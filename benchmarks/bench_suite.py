"""The whole evaluation suite on one dictionary (default: the `make run` dictionary), timed.

Runs `run_bench` with the default `sparselens bench` settings on
``/work/main/runs/default/sae`` and its cache (override with --dictionary/--cache), with a
fresh metric cache so every metric is computed, and records the wall time of the model load
and of each metric (as measured by the suite) plus the total, in wall time and in this
process's CPU time. Goal: under 15 minutes on 2 CPU cores. The machine this runs on is shared
with other jobs, so wall times are inflated; the CPU time (summed over both cores) is an upper
bound on the wall time an idle 2-core machine would need.

``--seed-dictionaries A B``: two dictionaries trained with different seeds on the same data;
their consistency (PW-MCC, fraction matched above 0.7) is measured in a second, separate
``consistency`` run and recorded beside the timings. ``--profile FILE``: run under cProfile
and print the 20 functions with the most cumulative time (to find wasteful stages).

Writes ``benchmarks/results/bench_suite.json`` (and the suite's own output under --out), with
the 1/5/15-minute load average at the start, after each metric and at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
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
    parser.add_argument("--seed-dictionaries", type=Path, nargs=2, default=None,
                        help="two dictionaries trained with different seeds (consistency)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile stats file")
    parser.add_argument("--results", type=Path, default=None, help="results JSON path")
    args = parser.parse_args()
    if args.out.exists() and not args.keep_cache:
        shutil.rmtree(args.out)
    load_start = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    model = json.loads((args.cache / "manifest.json").read_text())["model"]
    loaded = load_model(model, dtype="float32")
    load_seconds = time.perf_counter() - start
    load_cpu = time.process_time() - cpu_start
    cfg = SuiteConfig(progress=False)
    result = run_bench([args.dictionary], args.cache, args.out, cfg, loaded=loaded,
                       beside=False)
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(20)
    (name, record), = result.records.items()
    seconds, cpu = record["bench"]["seconds"], record["bench"]["cpu_seconds"]
    print(f"{'metric':16s} {'wall s':>8s} {'CPU s':>8s}  load average after")
    print(f"{'model load':16s} {load_seconds:8.1f} {load_cpu:8.1f}")
    for metric, value in seconds.items():
        print(f"{metric:16s} {value:8.1f} {cpu[metric]:8.1f}  {record['bench']['loadavg'][metric]}")
    print(f"{'total':16s} {total:8.1f} {total_cpu:8.1f}  (goal: 900 s wall on 2 cores)")
    headline = headline_metrics(record)
    for label, value in headline.items():
        print(f"  {label}: {value}")
    absorption = record.get("absorption") or {}
    per_letter = {letter: r["num_probe_true_positives"]
                  for letter, r in (absorption.get("per_letter") or {}).items()}
    print(f"absorption: {absorption.get('n_words')} words, probe F1 "
          f"{absorption.get('probe_f1')}, probe true positives per letter {per_letter}")
    consistency = None
    if args.seed_dictionaries:
        pair = run_bench(args.seed_dictionaries, args.cache, args.out / "seeds",
                         SuiteConfig(suites=("consistency",), progress=False), loaded=loaded,
                         page=False, beside=False)
        first = next(iter(pair.records.values()))["consistency"]
        consistency = {"dictionaries": [str(p) for p in args.seed_dictionaries], **first}
        print(f"consistency of the two seeds: {first}")
    out = args.results or RESULTS / ("bench_suite_rerun.json" if args.keep_cache
                                     else "bench_suite.json")
    atomic_write_json(out, {
        "dictionary": str(args.dictionary), "cache": str(args.cache),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "model_load_seconds": load_seconds, "model_load_cpu_seconds": load_cpu,
        "metric_seconds": seconds, "metric_cpu_seconds": cpu,
        "metric_loadavg_after": record["bench"]["loadavg"],
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "total_seconds": total, "total_cpu_seconds": total_cpu,
        "under_15_minutes_wall": total < 900, "under_15_minutes_cpu": total_cpu < 900,
        "headline": headline, "config": record["bench"]["config"],
        "absorption_words": absorption.get("n_words"),
        "absorption_probe_f1": absorption.get("probe_f1"),
        "absorption_true_positives_per_letter": per_letter,
        "absorption_skipped_letters": absorption.get("skipped_letters"),
        "seed_consistency": consistency, "profiled": bool(profiler),
        "note": "shared 2-core machine (see the load averages): wall times are inflated; CPU "
                "time (both cores summed) bounds the wall time on an idle 2-core machine from "
                "above, I/O waits aside"})
    print(f"wrote {out}; page {result.page}")


if __name__ == "__main__":
    main()
