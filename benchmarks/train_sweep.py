"""A sweep from one pass over the cache against the same dictionaries trained one by one.

Trains N dictionaries (default: TopK at two widths x two k, a common first sweep) on the same
cached activations of the embedded gemma-3-270m twice in one run of this script:

- separately: N runs of `sparselens train` (the command's own code, in this process), each
  reading, shuffling and casting the cache again;
- together: one `sparselens train --sweep ...`, every batch read, shuffled, moved to the
  device and cast once for all N.

and reports both wall times and CPU times (this process's, all threads: less sensitive than
wall time to other jobs on a shared machine), their ratios, the cost of one bare pass over the
data (read, shuffle, cast to float32: what the sweep pays once instead of N times), and whether each
dictionary of the sweep is bit for bit the one trained alone (it should be, on the CPU).
The two orders (separate first, together first) alternate over `--repeats` so that a slowly
changing machine load does not favour one side.

    python benchmarks/train_sweep.py          # about 10 minutes on 2 idle cores, 40 on busy ones
    python benchmarks/train_sweep.py --quick               # smoke run, a minute
    python benchmarks/train_sweep.py --cache CACHE --sweep n_latents=2048,4096 --sweep k=16,32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sparselens.cli.commands import train as train_cmd  # noqa: E402
from sparselens.data.cache import ActivationCache  # noqa: E402
from sparselens.data.factory import training_data  # noqa: E402
from sparselens.data.sites import Sites  # noqa: E402
from sparselens.io.atomic import atomic_write_json, read_json  # noqa: E402
from sparselens.training.config import LogConfig, TrainConfig  # noqa: E402
from sparselens.training.device_batch import DeviceBatch  # noqa: E402
from sparselens.training.sweep import expand_sweep  # noqa: E402
from train_speed import MODEL, ensure_cache  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SWEEP = ["n_latents=4096,8192", "k=32,64"]


def base_options(args: argparse.Namespace, cache: Path) -> train_cmd.Config:
    return train_cmd.Config(
        cache=str(cache), hookpoint=args.hookpoint, n_tokens=args.tokens,
        batch_size=args.batch_size, autocast=args.autocast, dictionary={"k": 32},
        log=LogConfig(every_steps=25, progress=False))


def separately(options: train_cmd.Config, out: Path) -> tuple[float, float]:
    """N runs of the train command, one member's options each; (wall, CPU) seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    for member in expand_sweep(train_cmd.train_config(options), options.sweep):
        fields = {f.name: getattr(member.config, f.name)
                  for f in dataclasses.fields(TrainConfig)}
        train_cmd.run(train_cmd.Config(**fields, cache=options.cache, out=str(out / member.name)))
    return time.perf_counter() - start, time.process_time() - cpu


def together(options: train_cmd.Config, out: Path) -> tuple[float, float]:
    """One run of the train command with the whole sweep; (wall, CPU) seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    train_cmd.run(dataclasses.replace(options, out=str(out)))
    return time.perf_counter() - start, time.process_time() - cpu


def data_pass(options: train_cmd.Config) -> float:
    """Seconds for one bare pass over the batches a run reads: read, shuffle, cast."""
    cfg = train_cmd.train_config(options)
    cache = ActivationCache.open(options.cache)
    batches = training_data(cache, Sites.from_cache(cache, cfg), cfg.batch_size, cfg.seed)(0)
    start = time.perf_counter()
    for _ in range(cfg.total_steps):
        batch = DeviceBatch(next(batches), torch.device("cpu"))
        for site in batch.host.acts:
            batch.acts(site, torch.float32)
    return time.perf_counter() - start


def identical(names: list[str], a: Path, b: Path) -> dict[str, bool]:
    return {n: (a / n / "weights.safetensors").read_bytes()
            == (b / n / "weights.safetensors").read_bytes() for n in names}


def last_fvu(folder: Path) -> float | None:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]).get("fvu") if lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="activation cache (default: harvest the embedded model once)")
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--sweep", action="append", default=None,
                        help=f"a --sweep entry of sparselens train (default: {DEFAULT_SWEEP})")
    parser.add_argument("--tokens", type=int, default=None, help="training tokens per member")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--autocast", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternating-order repeats")
    parser.add_argument("--quick", action="store_true", help="small widths, few tokens")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.sweep = args.sweep or ["n_latents=512,1024", "k=16,32"]
        args.tokens = args.tokens or 8 * args.batch_size
        args.repeats = 1
    args.sweep = args.sweep or DEFAULT_SWEEP
    args.tokens = args.tokens or 48 * args.batch_size
    out_json = args.out or RESULTS / ("train_sweep_quick.json" if args.quick
                                      else "train_sweep.json")
    cache = args.cache or (Path.home() / ".cache" / "sparselens" / "bench"
                           / f"{MODEL}-{args.hookpoint}-sweep")
    if args.cache is None:
        ensure_cache(cache, args.hookpoint, int(args.tokens / 0.9) + args.batch_size, 0.1)
    options = dataclasses.replace(base_options(args, cache), sweep=args.sweep)
    names = [m.name for m in expand_sweep(train_cmd.train_config(options), args.sweep)]
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_sweep_") as tmp:
        for repeat in range(args.repeats):
            sep_dir, tog_dir = Path(tmp) / f"separate{repeat}", Path(tmp) / f"together{repeat}"
            if repeat % 2 == 0:
                (t_sep, c_sep), (t_tog, c_tog) = (separately(options, sep_dir),
                                                  together(options, tog_dir))
            else:
                (t_tog, c_tog), (t_sep, c_sep) = (together(options, tog_dir),
                                                  separately(options, sep_dir))
            same = identical(names, sep_dir, tog_dir)
            rows.append({"repeat": repeat, "order": "separate first" if repeat % 2 == 0
                         else "together first", "separate_s": t_sep, "together_s": t_tog,
                         "ratio": t_sep / t_tog, "separate_cpu_s": c_sep,
                         "together_cpu_s": c_tog, "cpu_ratio": c_sep / c_tog,
                         "bit_identical": same,
                         "fvu": {n: last_fvu(tog_dir / n) for n in names}})
            print(f"repeat {repeat}: separate {t_sep:.1f} s ({c_sep:.1f} CPU s), together "
                  f"{t_tog:.1f} s ({c_tog:.1f} CPU s), ratio {t_sep / t_tog:.2f} (CPU "
                  f"{c_sep / c_tog:.2f}), identical {all(same.values())}", flush=True)
            shutil.rmtree(sep_dir)
            shutil.rmtree(tog_dir)
        one_pass = data_pass(options)
    resolved = TrainConfig(autocast=args.autocast).autocast
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                    "shared": "2 cores shared with other agents: timings are indicative"},
        "cache": str(cache), "cache_storage": read_json(cache / "manifest.json").get(
            "storage_dtype"),
        "hookpoint": args.hookpoint, "sweep": args.sweep, "members": names,
        "tokens_per_member": args.tokens, "batch_size": args.batch_size,
        "autocast": args.autocast if resolved != "auto" else "auto", "runs": rows,
        "data_pass_s": one_pass,
        "ratio_mean": sum(r["ratio"] for r in rows) / len(rows),
        "cpu_ratio_mean": sum(r["cpu_ratio"] for r in rows) / len(rows)}
    atomic_write_json(out_json, report)
    print(f"\n{len(names)} dictionaries ({', '.join(names)}), {args.tokens:,} tokens each, "
          f"batch {args.batch_size}, autocast {args.autocast}")
    print(f"{'repeat':>6s} {'order':>15s} {'separate s':>11s} {'together s':>11s} "
          f"{'ratio':>6s} {'CPU ratio':>9s} {'identical':>9s}")
    for r in rows:
        print(f"{r['repeat']:6d} {r['order']:>15s} {r['separate_s']:11.1f} "
              f"{r['together_s']:11.1f} {r['ratio']:6.2f} {r['cpu_ratio']:9.2f} "
              f"{str(all(r['bit_identical'].values())):>9s}")
    print(f"one bare pass over the data (read, shuffle, cast): {one_pass:.1f} s; separate runs "
          f"pay it {len(names)} times, the sweep once")
    print(f"wrote {out_json}; load average {load_start} -> {os.getloadavg()} (shared machine)")


if __name__ == "__main__":
    main()
