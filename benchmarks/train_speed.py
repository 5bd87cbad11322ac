"""TopK SAE training speed: sparselens side by side with the toolkits people compare it with.

Trains the same TopK configuration on the same cached activations of the embedded model
(gemma-3-270m, harvested once into an activation cache) in every installed toolkit, in float32
and with bf16 autocast, and reports tokens/s, speed ratios, held-out FVU after the same number of
tokens, peak memory (RSS) and the fraction of this machine's bf16 encoder-GEMM bound, measured in
the same run. Each training run is a fresh subprocess, so its peak RSS is its own. A second
table trains the other sparse variants of sparselens that exist in its registry.

Configurations: d=576 (the 640-d activations through a fixed random orthogonal projection to 576
dimensions, so the shape matches the reference measurements of a 576-wide LM), 9216 latents,
k=32, 4096 tokens a batch; and d=640 (the model's own width) with 16 x 640 latents.

    python benchmarks/train_speed.py            # full run: about an hour on 2 idle cores
    python benchmarks/train_speed.py --quick    # smoke run with tiny shapes, a few minutes
    python benchmarks/train_speed.py --configs d576 --dead-tokens 13107 --no-variants \
        --out benchmarks/results/train_speed_auxk.json   # latents die: AuxK in every step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sparselens.dictionaries import REGISTRY  # noqa: E402
from sparselens.io.atomic import atomic_write_json  # noqa: E402
from speed_tools import TOOLS, installed  # noqa: E402

MODEL = "gemma-3-270m"
MODEL_WIDTH = 640
VARIANTS = ("topk", "batchtopk", "jumprelu", "matryoshka", "abstopk")
K_VARIANTS = ("topk", "batchtopk", "matryoshka", "abstopk")
DEAD_TOKENS = 10_000_000
"""eai-sparsify's default dead-latent window; SAELens's (1000 steps of 4096) is 4M."""
RESULTS = Path(__file__).resolve().parent / "results"


def configs(quick: bool) -> dict[str, dict[str, int]]:
    if quick:
        return {"d576": {"d": 576, "n_latents": 1152, "k": 32, "batch": 256},
                "d640": {"d": 640, "n_latents": 1280, "k": 32, "batch": 256}}
    return {"d576": {"d": 576, "n_latents": 9216, "k": 32, "batch": 4096},
            "d640": {"d": 640, "n_latents": 16 * 640, "k": 32, "batch": 4096}}


# ---- the activations (harvested once, shared by every run) ----

def ensure_cache(folder: Path, hookpoint: str, tokens: int, heldout_fraction: float) -> Path:
    """Harvest `tokens` activations of the embedded model at `hookpoint` unless cached."""
    from sparselens.data.cache import ActivationCache

    try:
        if ActivationCache.open(folder).n_tokens >= tokens:
            return folder
    except (FileNotFoundError, ValueError):
        pass
    from sparselens.data.chunking import chunk_texts
    from sparselens.data.corpus import CorpusConfig, iter_texts
    from sparselens.data.harvest import HarvestConfig, harvest
    from sparselens.models.source import load_model

    print(f"harvesting {tokens} tokens of {MODEL} {hookpoint} into {folder} (once)", flush=True)
    loaded = load_model(MODEL, dtype="float32")
    chunks = chunk_texts(iter_texts(CorpusConfig(source="builtin")), loaded.tokenizer, 256)
    harvest(loaded, chunks, [hookpoint], folder,
            HarvestConfig(max_tokens=tokens, heldout_fraction=heldout_fraction, batch_size=8))
    return folder


def projection(d: int) -> Tensor | None:
    """Fixed random matrix with orthonormal columns mapping the 640-d activations to d dims."""
    if d == MODEL_WIDTH:
        return None
    gen = torch.Generator().manual_seed(576)
    return torch.linalg.qr(torch.randn(MODEL_WIDTH, d, generator=gen))[0]


def transform(acts: Tensor, spec: dict[str, Any]) -> Tensor:
    """Project (if needed) and scale so that the mean norm is sqrt(d), as every tool sees it."""
    proj = projection(spec["d"])
    x = acts.float() if proj is None else acts.float() @ proj
    return x * spec["scale"]


def batches(spec: dict[str, Any], split: str, epochs: int | None = None):
    from sparselens.data.cache import ActivationCache

    cache = ActivationCache.open(spec["cache"])
    seed = spec.get("seed", 0) if split == "train" else 0  # held-out tokens: always the same
    for batch in cache.batches(spec["batch"], split=split, seed=seed, drop_last=split == "train",
                               epochs=epochs):
        yield transform(next(iter(batch.acts.values())), spec)


def input_scale(spec: dict[str, Any]) -> float:
    x = next(batches({**spec, "scale": 1.0}, "train"))
    return float(spec["d"] ** 0.5 / x.norm(dim=1).mean())


# ---- one training run (in its own process) ----

def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS now, VmHWM peak since exec)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train `spec["steps"]` timed steps (after warm-up steps), then evaluate held-out FVU."""
    torch.manual_seed(spec.get("seed", 0))
    stream = batches(spec, "train")
    x = next(stream)
    runner = TOOLS[spec["tool"]][1](spec, x)
    setup_rss = memory_mb("VmRSS")
    times = []
    for index in range(spec["warmup"] + spec["steps"]):
        start = time.perf_counter()
        runner.step(x)
        if index >= spec["warmup"]:
            times.append(time.perf_counter() - start)
        x = next(stream)
    median = sorted(times)[len(times) // 2]
    return {"tokens_per_s": spec["steps"] * spec["batch"] / sum(times),
            "tokens_per_s_at_median_step": spec["batch"] / median,
            "step_ms_median": 1e3 * median,
            "step_ms_min": 1e3 * min(times),
            "tokens_trained": (spec["warmup"] + spec["steps"]) * spec["batch"],
            "heldout_fvu": heldout_fvu(runner, spec),
            "setup_rss_mb": setup_rss,
            "peak_rss_mb": memory_mb("VmHWM"),
            "training_path": getattr(runner, "training_path", None)}


def heldout_fvu(runner, spec: dict[str, Any]) -> float:
    """Fraction of variance unexplained on (up to) `heldout_tokens` held-out tokens."""
    err = total = square = 0.0
    mean_sum = torch.zeros(spec["d"], dtype=torch.float64)
    count = 0
    for x in batches(spec, "heldout", epochs=1):
        x = x[:spec["heldout_tokens"] - count]
        err += float((runner.reconstruct(x).float() - x).double().pow(2).sum())
        square += float(x.double().pow(2).sum())
        mean_sum += x.double().sum(0)
        count += x.shape[0]
        if count >= spec["heldout_tokens"]:
            break
    total = square - float(mean_sum.pow(2).sum()) / count
    return err / total


def run_isolated(spec: dict[str, Any], script: str = __file__) -> dict[str, Any]:
    """Run ``script --worker SPEC`` (its `worker(spec)`) in a fresh interpreter, so its peak
    RSS is its own; its last stdout line is the JSON result; failures become an "error" entry."""
    proc = subprocess.run([sys.executable, script, "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {**spec, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return {**spec, **json.loads(lines[-1])}


# ---- the bound and the table ----

def gemm_bound(tokens: int, d: int, n: int, reps: int = 7) -> dict[str, float]:
    """Tokens/s if a step cost only the bf16 encoder GEMM ``x @ W_enc`` (min of `reps`).

    ``plain`` allocates the output as user code does; ``preallocated`` writes into a reused
    buffer (the GEMM alone, the stricter bound).
    """
    x = torch.randn(tokens, d).bfloat16()
    W = torch.randn(d, n).bfloat16()
    out = torch.empty(tokens, n, dtype=torch.bfloat16)
    result = {}
    for name, fn in (("plain", lambda: x @ W),
                     ("preallocated", lambda: torch.matmul(x, W, out=out))):
        fn()
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        result[f"{name}_ms"] = best * 1e3
        result[f"{name}_tokens_per_s"] = tokens / best
    return result


def summarise(rows: list[dict[str, Any]], bound: dict[str, float]) -> list[str]:
    ok = [r for r in rows if "error" not in r]
    lines = [f"{'tool':22s} {'mode':5s} {'tok/s':>9s} {'step ms':>8s} {'FVU':>7s} "
             f"{'peak MB':>8s} {'%bound':>7s} {'%strict':>7s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['tool']:22s} {r['mode']:5s} failed: {r['error'][:80]}")
            continue
        lines.append(
            f"{r['tool']:22s} {r['mode']:5s} {r['tokens_per_s']:9.0f} {r['step_ms_median']:8.1f} "
            f"{r['heldout_fvu']:7.4f} {r['peak_rss_mb']:8.0f} "
            f"{100 * r['tokens_per_s'] / bound['plain_tokens_per_s']:6.1f}% "
            f"{100 * r['tokens_per_s'] / bound['preallocated_tokens_per_s']:6.1f}%")
    ours = [r for r in ok if r["tool"] == "sparselens"]
    if ours:
        best = max(ours, key=lambda r: r["tokens_per_s"])
        peers = {r["tool"] for r in ok if r["tool"] != "sparselens"}
        for peer in sorted(peers):
            top = max((r for r in ok if r["tool"] == peer), key=lambda r: r["tokens_per_s"])
            lines.append(f"sparselens {best['mode']} / {peer} {top['mode']} (best modes): "
                         f"{best['tokens_per_s'] / top['tokens_per_s']:.2f}x")
        peer_fvu = [r["heldout_fvu"] for r in ok if r["tool"] != "sparselens"]
        if peer_fvu:
            lines.append(f"held-out FVU: sparselens {best['mode']} {best['heldout_fvu']:.4f}, "
                         f"best peer {min(peer_fvu):.4f}")
    return lines


def variant_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per variant run; ``path`` says whether it trained through the sparse kernel."""
    lines = [f"{'variant':12s} {'mode':5s} {'path':6s} {'tok/s':>9s} {'FVU':>7s} {'peak MB':>8s}"]
    for r in rows:
        if "error" in r or "skipped" in r:
            lines.append(f"{r['architecture']:12s} {r['mode']:5s} "
                         f"{r.get('skipped') or 'failed: ' + r['error'][:70]}")
            continue
        lines.append(f"{r['architecture']:12s} {r['mode']:5s} {r.get('training_path') or '?':6s} "
                     f"{r['tokens_per_s']:9.0f} {r['heldout_fvu']:7.4f} {r['peak_rss_mb']:8.0f}")
    return lines


def variant_specs(base: dict[str, Any], modes: list[str]) -> list[dict[str, Any]]:
    specs = []
    for name in VARIANTS:
        extra = {"k": base["k"]} if name in K_VARIANTS else {}
        for mode in modes:
            spec = {**base, "tool": "sparselens", "mode": mode, "architecture": name,
                    "dictionary": extra}
            if name not in REGISTRY:
                spec["skipped"] = "not in sparselens.dictionaries.REGISTRY"
            specs.append(spec)
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few steps")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per run (default 64: 270k tokens, enough for the "
                             "held-out FVU to separate the toolkits)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated tools")
    parser.add_argument("--modes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--configs", default=None,
                        help="d576 and/or d640 (default: both; --quick: d576)")
    parser.add_argument("--no-variants", action="store_true", help="skip the variants table")
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--cache", type=Path, default=None, help="activation cache folder")
    parser.add_argument("--heldout-tokens", type=int, default=None)
    parser.add_argument("--dead-tokens", type=int, default=DEAD_TOKENS,
                        help="a latent unfired for this many tokens is dead and AuxK trains it "
                             "(default: sparsify's 10M, so no latent dies in a short run, as "
                             "early in a real one; a tenth of the timed tokens times AuxK too)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every toolkit's initialisation and of the order of the "
                             "training tokens (the held-out tokens stay the same); repeat with "
                             "a few seeds to see how much of an FVU gap is noise")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    steps = args.steps or (3 if args.quick else 64)
    heldout = args.heldout_tokens or (1024 if args.quick else 16384)
    wanted = (args.configs or ("d576" if args.quick else "d576,d640")).split(",")
    shapes = {name: c for name, c in configs(args.quick).items() if name in wanted}
    if not shapes:
        raise SystemExit(f"--configs must name d576 and/or d640, got {args.configs!r}")
    modes = args.modes.split(",")
    widest = max(c["batch"] for c in shapes.values())
    tokens = int(max((steps + args.warmup + 1) * widest / 0.9, heldout / 0.1)) + widest
    cache = args.cache or (Path.home() / ".cache" / "sparselens" / "bench"
                           / f"{MODEL}-{args.hookpoint}-{tokens}")
    ensure_cache(cache, args.hookpoint, tokens, heldout_fraction=0.1)
    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "loadavg_start": os.getloadavg()},
        "cache": str(cache), "hookpoint": args.hookpoint, "steps": steps,
        "warmup": args.warmup, "configs": {}}
    for name, shape in shapes.items():
        base = {**shape, "cache": str(cache), "steps": steps, "warmup": args.warmup,
                "heldout_tokens": heldout, "dead_tokens": args.dead_tokens, "seed": args.seed}
        base["scale"] = input_scale(base)
        bound = gemm_bound(shape["batch"], shape["d"], shape["n_latents"])
        rows = []
        for tool in args.tools.split(","):
            for mode in modes:
                if tool not in TOOLS or not installed(tool):
                    rows.append({**base, "tool": tool, "mode": mode, "error": "not installed"})
                    continue
                rows.append(run_isolated({**base, "tool": tool, "mode": mode}))
                print(f"  {name} {tool} {mode}: done", flush=True)
        variants = [] if args.no_variants else [
            spec if "skipped" in spec else run_isolated(spec)
            for spec in variant_specs(base, modes)]
        report["configs"][name] = {"shape": shape, "gemm_bound": bound, "runs": rows,
                                   "variants": variants}
        print(f"\n== {name}: d={shape['d']} n={shape['n_latents']} k={shape['k']} "
              f"batch={shape['batch']}; bf16 GEMM bound {bound['plain_tokens_per_s']:.0f} tok/s "
              f"(x @ W_enc), {bound['preallocated_tokens_per_s']:.0f} (into a reused buffer)")
        print("\n".join(summarise(rows, bound)))
        if variants:
            print("\n".join(["", "sparselens variants:"] + variant_lines(variants)))
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(f"\nwrote {args.out}; load average {report['machine']['loadavg_start']} -> "
          f"{report['machine']['loadavg_end']} (timings on a loaded machine are noise)")


if __name__ == "__main__":
    main()
