"""Where the time of one sparselens training step goes: a `torch.profiler` table.

Trains the TopK SAE of `train_speed.py`'s configuration (default d=576, 9216 latents, k=32,
4096 tokens a batch, on the same cached gemma-3-270m activations) for a few steps, times them,
then profiles three more and prints the operators by self CPU time, grouped by input shape.
docs/performance.md quotes its output. Run it on an idle machine:

    python benchmarks/profile_step.py                 # bf16 autocast
    python benchmarks/profile_step.py --mode fp32 --architecture batchtopk --config d640
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed  # noqa: E402
from speed_tools import SparselensRunner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--config", choices=("d576", "d640"), default="d576")
    parser.add_argument("--architecture", default="topk")
    parser.add_argument("--cache", type=Path, default=None,
                        help="activation cache (default: train_speed.py's, harvested if missing)")
    parser.add_argument("--rows", type=int, default=30, help="operators to list")
    parser.add_argument("--dead-tokens", type=int, default=None,
                        help="dead-latent window (default: two batches, so AuxK is active; "
                             "a huge value profiles the step without AuxK)")
    args = parser.parse_args()
    shape = train_speed.configs(quick=False)[args.config]
    cache = args.cache or train_speed.ensure_cache(
        Path.home() / ".cache" / "sparselens" / "bench" / f"{train_speed.MODEL}-resid.6-236202",
        "resid.6", 236_202, heldout_fraction=0.1)
    spec = {**shape, "cache": str(cache), "mode": args.mode, "steps": 20, "scale": 1.0,
            "architecture": args.architecture,
            "dead_tokens": args.dead_tokens or 2 * shape["batch"],
            "dictionary": {} if args.architecture == "jumprelu" else {"k": shape["k"]}}
    spec["scale"] = train_speed.input_scale(spec)
    stream = train_speed.batches(spec, "train")
    batches = [next(stream) for _ in range(4)]
    runner = SparselensRunner(spec, batches[0])
    for index in range(3):
        runner.step(batches[index % 4])
    start, timed = time.perf_counter(), 8
    for index in range(timed):
        runner.step(batches[index % 4])
    seconds = (time.perf_counter() - start) / timed
    print(f"{args.architecture} {args.config} {args.mode}: {1e3 * seconds:.1f} ms a step, "
          f"{shape['batch'] / seconds:.0f} tokens/s ({runner.training_path} path)")
    with torch.profiler.profile(record_shapes=True) as prof:
        for index in range(3):
            runner.step(batches[index % 4])
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                             row_limit=args.rows))


if __name__ == "__main__":
    main()
