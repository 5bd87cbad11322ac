"""The decoder candidate search in float32 against bfloat16, interleaved in one process.

    python benchmarks/candidate_search.py --n 16384 --reps 3

On a machine shared with other jobs, runs of `benchmarks/compare.py` minutes apart see
different loads; here both precisions alternate (float32, bfloat16, float32, ...) on the same
decoders (those of `benchmarks/compare.py`) and the best of `--reps` is kept for each, with
2 threads. Times `decoder_candidates` whole: the blocked GEMM with running top-k and, for
bfloat16, the float64 rescoring of the k + 8 candidates. Also reports how many latents'
best similarity came out as the bfloat16 bound rather than an exact rescored value, and the
largest difference of the best similarities between the two precisions. Writes
``benchmarks/results/candidate_search.json`` (command, date, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import decoders  # noqa: E402
from sparselens.evaluation.candidates import decoder_candidates  # noqa: E402
from sparselens.evaluation.matching import unit_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--d", type=int, default=640)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    a, b = decoders(args.n, args.d)
    a, b = unit_rows(a), unit_rows(b)
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    out = {}
    for _ in range(args.reps):
        for name in times:
            start = time.perf_counter()
            out[name] = decoder_candidates(a, b, args.k, bfloat16=name == "bfloat16")
            times[name].append(time.perf_counter() - start)
            print(f"{name:8s} {times[name][-1]:7.1f} s", flush=True)
    exact_a = out["float32"][2]
    bf_a = out["bfloat16"][2]
    record = {"command": "python " + " ".join(sys.argv),
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "loadavg_end": os.getloadavg(), "n": args.n, "d": args.d, "k": args.k,
              "seconds": times, "best_s": {name: min(t) for name, t in times.items()},
              "best_similarity_max_abs_diff": float(np.abs(bf_a - exact_a).max()),
              "latents_with_bound_not_exact": int((bf_a > exact_a + 1e-5).sum())}
    print(json.dumps(record, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "candidate_search.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
