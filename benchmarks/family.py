"""Every dictionary variant on the same activations: FVU and loss recovered against L0.

Harvests the embedded gemma-3-270m once at the chosen hookpoints (default resid.6 and resid.12
of the built-in corpus; reused if the cache exists), trains every registered variant of the
family at three sparsity levels per hookpoint with the library's Trainer, and measures on
held-out tokens:

- FVU and L0 from `reconstruction_metrics` (codes from ``encode``: the inference path, so
  BatchTopK-style variants are measured with their saved thresholds), with the FVU > 1 flag;
- loss recovered (and spliced CE) from `spliced_metrics` on held-out sequences;
- training throughput against TopK at the same level, and TopK's FVU interpolated at the run's
  measured L0 (log-L0), the comparison each paper's claim is about;
- for ``kronsae`` against ``topk``: the encoder's time (x -> pre-activations, the part the
  paper factorises) on one batch;
- each row's paper claim and whether this run reaches it (`CLAIMS`).

Sparsity levels: variants with a `k` use k = level (JumpReLU and MDL: the target/starting L0;
see docs/dictionaries.md); the L1-type penalties (relu, relu_dn, gated, p_anneal), MDL's DL
weight and top_afa (no k) use a grid of coefficients, one per level (rough calibration on a
small run), so their L0 is whatever training gives: the table reports measured L0.

Presets: ``--small`` (1024 latents, 41k training tokens in 80 steps a run: the family on
two hookpoints within an hour on a 2-core machine shared with a dozen other jobs),
``--medium`` (4096 latents, 400k), default (1M), ``--quick`` (tiny, to check the script).
Writes ``benchmarks/results/<tag>.json`` and ``.png``. Timings on a shared machine are only
indicative.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.factory import training_data
from sparselens.data.sites import Sites
from sparselens.dictionaries import REGISTRY, Dictionary
from sparselens.dictionaries.base import build
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.evaluation.spliced import spliced_metrics
from sparselens.io.atomic import atomic_open, atomic_write_json
from sparselens.models.source import LoadedModel, cache_dir, load_model
from sparselens.training.config import CheckpointConfig, LogConfig, OptimConfig, TrainConfig
from sparselens.training.preparation import collect_sample
from sparselens.training.together import NonFiniteLoss, fit_together
from sparselens.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
MODEL = "gemma-3-270m"
FAMILY = ("topk", "relu", "relu_dn", "batchtopk", "multi_topk", "abstopk", "matryoshka",
          "jumprelu", "gated", "p_anneal", "feature_choice", "mutual_choice", "top_afa", "mp",
          "archetypal", "variational", "polysae", "kronsae", "mdl")
K_SPARSE = {"topk", "batchtopk", "multi_topk", "abstopk", "matryoshka", "feature_choice",
            "mutual_choice", "mp", "archetypal", "variational", "jumprelu", "polysae",
            "kronsae"}
ADDED = ("polysae", "kronsae", "mdl")
"""The architectures added in the second round: compared with TopK in their own table."""
# One coefficient per sparsity level (sparsest first), for inputs normalised to mean norm
# sqrt(d) as the trainer does; larger coefficients give sparser codes. Calibrated roughly on
# 150 steps of a 1024-latent run (relu 2.0 -> L0 19, 0.5 -> 76; relu_dn 8 -> 18, 2 -> 148;
# gated 2 -> 35; p_anneal 2 -> 15).
L1_COEFS = {"relu": (2.0, 1.0, 0.5), "relu_dn": (8.0, 4.0, 2.0), "gated": (4.0, 2.0, 1.0),
            "p_anneal": (2.0, 1.0, 0.5)}
# MDL's λ per bit of description, in the paper's units (sparsest first).
# (3e-3 .. 3e-4 gave L0 4-11 at every level on gemma-3-270m; 1e-4 gives about 14.)
MDL_COEFS = (1e-4, 3e-5, 1e-5)
AFA_COEFS = (1.0, 1 / 8, 1 / 32)


@dataclass
class Sizes:
    harvest_tokens: int
    context_len: int
    n_latents: int
    train_tokens: int
    batch_size: int
    levels: tuple[int, ...]
    spliced_sequences: int


FULL = Sizes(200_000, 128, 4096, 1_000_000, 4096, (16, 32, 64), 8)
SMALL = Sizes(262_144, 128, 1024, 40_960, 512, (16, 32, 64), 4)
# A third of FULL's training tokens in smaller batches (the same number of steps within 25%):
# the whole family in about an hour on 2 cores instead of several.
MEDIUM = Sizes(200_000, 128, 4096, 400_000, 2048, (16, 32, 64), 8)
QUICK = Sizes(6_000, 64, 256, 8_192, 512, (16,), 1)


def level_settings(name: str, level: int, index: int,
                   mdl_coefs: tuple[float, ...] = MDL_COEFS) -> dict[str, Any]:
    """The variant's config fields for the `index`-th sparsity level (L0 ≈ `level`)."""
    if name in K_SPARSE:
        return {"k": level}
    if name == "mdl":
        return {"k": level, "sparsity_coef": mdl_coefs[index % len(mdl_coefs)]}
    if name == "top_afa":
        return {"afa_coef": AFA_COEFS[index % len(AFA_COEFS)]}
    return {"sparsity_coef": L1_COEFS[name][index % len(L1_COEFS[name])]}


def open_cache(path: Path, sizes: Sizes, hookpoints: list[str],
               loaded: LoadedModel, allow_incomplete: bool = False) -> ActivationCache:
    """The activation cache at `path`, harvested first if it is missing or incomplete."""
    manifest = path / "manifest.json"
    if allow_incomplete and manifest.exists():  # the finished shards of a partial harvest
        cache = ActivationCache.open(path, allow_incomplete=True)
    elif not (manifest.exists() and json.loads(manifest.read_text()).get("complete")):
        from sparselens.data.chunking import chunk_texts
        from sparselens.data.corpus import CorpusConfig, iter_texts
        from sparselens.data.harvest import HarvestConfig, harvest

        chunks = chunk_texts(iter_texts(CorpusConfig()), loaded.tokenizer, sizes.context_len)
        needed = 2 * sizes.harvest_tokens // sizes.context_len + 1
        harvest(loaded, islice(chunks, needed), hookpoints, path,
                HarvestConfig(max_tokens=sizes.harvest_tokens, progress=False))
        cache = ActivationCache.open(path)
    else:
        cache = ActivationCache.open(path)
    missing = sorted(set(hookpoints) - set(cache.hookpoints))
    if missing:
        raise SystemExit(f"{path} holds {cache.hookpoints}, not {missing}; pass another --cache")
    return cache


def train_group(members: list[tuple[str, dict[str, Any]]], cache: ActivationCache,
                hookpoint: str, sizes: Sizes, seed: int = 0
                ) -> list[tuple[Dictionary | None, float]]:
    """Train several variants from one read of the data (`together.fit_together`, the sweep
    machinery): every batch is read once and handed to each trainer in turn, so their
    throughputs are measured under the same load. Returns each member's dictionary (None if
    its loss went non-finite) and the seconds its own training steps took."""
    configs = [TrainConfig(architecture=name, n_latents=sizes.n_latents, dictionary=settings,
                           hookpoint=hookpoint, n_tokens=sizes.train_tokens,
                           batch_size=sizes.batch_size, optim=OptimConfig(), seed=seed,
                           checkpoint=CheckpointConfig(every_steps=0),
                           log=LogConfig(progress=False, every_steps=10_000))
               for name, settings in members]
    data = training_data(cache, Sites.from_cache(cache, configs[0]), sizes.batch_size,
                         configs[0].seed)
    # one initialisation sample for all (the same tokens each would read: one stream, one
    # seed); reading it per member took longer than the members' short training runs
    sample = collect_sample(data, configs[0])
    trainers = [Trainer(cfg, data, sample=sample) for cfg in configs]
    seconds = [0.0] * len(trainers)
    for i, trainer in enumerate(trainers):
        def timed(*args: Any, _step: Any = trainer.step, _i: int = i) -> None:
            start = time.perf_counter()
            _step(*args)
            seconds[_i] += time.perf_counter() - start
        trainer.step = timed  # type: ignore[method-assign]
    names = [f"{name} {settings}" for name, settings in members]
    try:
        fit_together(trainers, names)
    except NonFiniteLoss as err:
        print(f"WARNING: {err}", flush=True)
    return [(None if t.failed is not None else t.dictionary, s)
            for t, s in zip(trainers, seconds)]


def run_key(run: dict[str, Any]) -> str:
    return json.dumps([run["variant"], run["hookpoint"], run["level"], run["settings"]],
                      sort_keys=True)


def evaluate(dictionary: Dictionary, cache: ActivationCache, loaded: LoadedModel,
             hookpoint: str, sizes: Sizes) -> dict[str, Any]:
    batches = cache.batches(sizes.batch_size, hookpoints=[hookpoint], split="heldout",
                            shuffle=False)
    recon = reconstruction_metrics(dictionary, batches, hookpoint)
    for warning in recon["warnings"]:
        print(f"WARNING: {dictionary.architecture} at {hookpoint}: {warning}", flush=True)
    if sizes.spliced_sequences == 0:  # not measured (too slow for a loaded machine)
        spliced = dict.fromkeys(("loss_recovered", "ce_clean", "ce_spliced", "kl_spliced"),
                                float("nan"))
    else:
        heldout = cache.tokens()[cache.is_heldout(torch.arange(cache.n_sequences))]
        sequences = list(heldout[: sizes.spliced_sequences])
        spliced = spliced_metrics(dictionary, loaded, hookpoint, sequences)
    return {"l0": recon["l0"], "fvu": recon["fvu"], "fvu_above_one": recon["fvu_above_one"],
            "dead_fraction": recon["dead_fraction"],
            "loss_recovered": spliced["loss_recovered"], "ce_clean": spliced["ce_clean"],
            "ce_spliced": spliced["ce_spliced"], "kl_spliced": spliced["kl_spliced"]}


@torch.no_grad()
def encoder_seconds(dictionary: Dictionary, cache: ActivationCache, hookpoint: str,
                    repeats: int = 5) -> float:
    """Median time of x -> pre-activations on one held-out batch of 2048 tokens."""
    batch = next(iter(cache.batches(2048, hookpoints=[hookpoint], split="heldout",
                                    shuffle=False)))
    x = dictionary.scale_input(batch.acts[hookpoint].float())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dictionary.pre_acts(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def topk_fvu_at(runs: list[dict[str, Any]], hookpoint: str, l0: float) -> float | None:
    """TopK's held-out FVU at this L0, interpolated linearly in log L0 between TopK's runs on
    the same hookpoint (None outside their range, extrapolating by at most 25%)."""
    ref = sorted((r["l0"], r["fvu"]) for r in runs
                 if r["variant"] == "topk" and r["hookpoint"] == hookpoint)
    if not ref or not ref[0][0] / 1.25 <= l0 <= ref[-1][0] * 1.25:
        return None
    if len(ref) == 1:
        return ref[0][1]
    logs = [math.log(a) for a, _ in ref]
    t = math.log(l0)
    j = max(1, min(len(ref) - 1, next((i for i, v in enumerate(logs) if v >= t), len(ref) - 1)))
    w = (t - logs[j - 1]) / (logs[j] - logs[j - 1])
    return ref[j - 1][1] + w * (ref[j][1] - ref[j - 1][1])


# The claim of each variant's paper that a reconstruction/sparsity table can test, and the test
# (row, TopK's FVU at the row's L0) -> reached?  None: not testable here.
Claim = tuple[str, Any]
CLAIMS: dict[str, Claim] = {
    "topk": ("reference", lambda r, t: None),
    "batchtopk": ("FVU <= TopK at the same L0 (Bussmann et al. fig. 1)",
                  lambda r, t: None if t is None else r["fvu"] <= t),
    "matryoshka": ("FVU within 10% of TopK (slightly worse reconstruction, Bussmann et al. 2025)",
                   lambda r, t: None if t is None else r["fvu"] <= 1.1 * t),
    "jumprelu": ("FVU <= TopK at the same L0, and L0 within 10% of the target",
                 lambda r, t: (abs(r["l0"] / r["level"] - 1) <= 0.1
                               and (t is None or r["fvu"] <= t))),
    "multi_topk": ("FVU within 5% of TopK at k (Gao et al. sec. 5.3)",
                   lambda r, t: None if t is None else r["fvu"] <= 1.05 * t),
    "abstopk": ("FVU <= TopK at the same L0", lambda r, t: None if t is None else r["fvu"] <= t),
    "gated": ("better FVU than ReLU at the same L0 (Pareto improvement)", lambda r, t: None),
    "polysae": ("reconstruction comparable to TopK (FVU within 5%)",
                lambda r, t: None if t is None else r["fvu"] <= 1.05 * t),
    "kronsae": ("explained variance on par with TopK (FVU within 10%) at a fraction of the "
                "encoder cost", lambda r, t: None if t is None else r["fvu"] <= 1.1 * t),
    "mdl": ("shorter description than TopK at similar FVU (reported: DL bits)",
            lambda r, t: None),
    "archetypal": ("FVU close to TopK (within 10%) with stable dictionaries",
                   lambda r, t: None if t is None else r["fvu"] <= 1.1 * t),
    "variational": ("KL pressure hurts reconstruction (FVU > TopK)",
                    lambda r, t: None if t is None else r["fvu"] > t),
}


def judge(runs: list[dict[str, Any]]) -> None:
    """Add TopK's FVU at each run's L0, the throughput against TopK and the claim verdict."""
    for r in runs:
        r["topk_fvu_at_l0"] = topk_fvu_at(runs, r["hookpoint"], r["l0"])
        same = [t for t in runs if t["variant"] == "topk" and t["hookpoint"] == r["hookpoint"]
                and t["level"] == r["level"]]
        r["throughput_vs_topk"] = (same[0]["train_seconds"] / r["train_seconds"]) if same else None
        claim, check = CLAIMS.get(r["variant"], ("", lambda r, t: None))
        r["claim"] = claim
        r["claim_reached"] = check(r, r["topk_fvu_at_l0"])
        if r["variant"] == "mdl":
            r["dl_bits"] = description_bits(r)


def description_bits(r: dict[str, Any]) -> float:
    """The paper's upper bound on bits per token, L0 (B + log2 F), with B = 8."""
    from sparselens.dictionaries.mdl import dl_upper_bound

    return dl_upper_bound(r["l0"], r["n_latents"], 8.0)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    cmap = plt.get_cmap("tab20")
    markers = "osD^vP*X"
    hookpoint = runs[0]["hookpoint"]
    for i, name in enumerate(sorted({r["variant"] for r in runs})):
        mine = sorted((r for r in runs if r["variant"] == name and r["hookpoint"] == hookpoint),
                      key=lambda r: r["l0"])
        if not mine:
            continue
        l0 = [r["l0"] for r in mine]
        for ax, key in zip(axes, ("fvu", "loss_recovered")):
            ax.plot(l0, [r[key] for r in mine], marker=markers[i % len(markers)],
                    color=cmap(i), label=name)
    for ax, label in zip(axes, ("FVU (held-out, lower is better)",
                                "loss recovered (held-out, higher is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("L0 (mean active latents per token)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, ncol=2)
    fig.suptitle(f"sparselens dictionary family on gemma-3-270m {hookpoint}")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def print_table(runs: list[dict[str, Any]]) -> None:
    print(f"{'variant':14s} {'hook':9s} {'setting':26s} {'L0':>6s} {'FVU':>6s} {'TopK@L0':>7s} "
          f"{'lossrec':>7s} {'dead%':>6s} {'speed':>5s}  claim reached")
    for r in runs:
        setting = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["settings"].items())
        ref = "-" if r["topk_fvu_at_l0"] is None else f"{r['topk_fvu_at_l0']:.3f}"
        speed = "-" if r["throughput_vs_topk"] is None else f"{r['throughput_vs_topk']:.2f}"
        verdict = {None: "n/a", True: "yes", False: "NO"}[r["claim_reached"]]
        flag = "  FVU>1!" if r["fvu_above_one"] else ""
        print(f"{r['variant']:14s} {r['hookpoint']:9s} {setting:26.26s} {r['l0']:6.1f} "
              f"{r['fvu']:6.3f} {ref:>7s} {r['loss_recovered']:7.3f} "
              f"{100 * r['dead_fraction']:6.1f} {speed:>5s}  {verdict}{flag}")


def print_added(runs: list[dict[str, Any]], encoder: dict[str, float]) -> None:
    """The added architectures against TopK at matched L0."""
    print("\nadded architectures against TopK at matched L0 (FVU, loss recovered, speed):")
    for r in runs:
        if r["variant"] not in ADDED:
            continue
        ref = [t for t in runs if t["variant"] == "topk" and t["hookpoint"] == r["hookpoint"]
               and t["level"] == r["level"]]
        topk = ref[0] if ref else None
        line = (f"  {r['variant']:8s} {r['hookpoint']:9s} L0 {r['l0']:6.1f} FVU {r['fvu']:.3f} "
                f"loss rec {r['loss_recovered']:.3f}")
        if topk:
            line += (f" | TopK L0 {topk['l0']:5.1f} FVU {topk['fvu']:.3f} loss rec "
                     f"{topk['loss_recovered']:.3f} | throughput x{r['throughput_vs_topk']:.2f}")
        print(line)
    if encoder:
        print("  encoder time on 2048 tokens: " + ", ".join(f"{k} {1e3 * v:.1f} ms"
                                                        for k, v in encoder.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check it runs")
    parser.add_argument("--small", action="store_true",
                        help="1024 latents, 41k training tokens a run (under an hour)")
    parser.add_argument("--medium", action="store_true",
                        help="400k training tokens per run instead of 1M (several hours)")
    parser.add_argument("--levels", type=int, nargs="+", default=None,
                        help="sparsity levels (L0 targets) instead of the preset's")
    parser.add_argument("--hookpoints", nargs="+", default=["resid.6", "resid.12"])
    parser.add_argument("--cache", type=Path, default=None,
                        help="activation cache folder holding the hookpoints (harvested if "
                             "missing)")
    parser.add_argument("--variants", nargs="+", default=list(FAMILY), choices=sorted(REGISTRY))
    parser.add_argument("--one-level", nargs="*", default=[], choices=sorted(REGISTRY),
                        help="variants trained at the middle level only (to save time)")
    parser.add_argument("--out", type=Path, default=None, help="results path without suffix")
    parser.add_argument("--n-latents", type=int, default=None, help="width instead of the "
                        "preset's")
    parser.add_argument("--train-tokens", type=int, default=None,
                        help="training tokens per dictionary instead of the preset's")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--mdl-coefs", type=float, nargs="+", default=None,
                        help="MDL's λ per level (sparsest first) instead of MDL_COEFS")
    parser.add_argument("--spliced-levels", type=int, nargs="*", default=None,
                        help="measure loss recovered only at these levels (default: all)")
    parser.add_argument("--spliced-sequences", type=int, default=None,
                        help="held-out sequences for loss recovered instead of the preset's")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="use the finished shards of an unfinished --cache as they are")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs of <out>.partial.json and train only the missing "
                             "ones")
    parser.add_argument("--from-partial", type=Path, default=None,
                        help="finish from the .partial.json of an interrupted run (no training)")
    args = parser.parse_args()
    sizes = (QUICK if args.quick else SMALL if args.small else MEDIUM if args.medium
             else FULL)
    if args.levels:
        sizes = dataclasses.replace(sizes, levels=tuple(args.levels))
    for field, value in (("n_latents", args.n_latents), ("train_tokens", args.train_tokens),
                         ("batch_size", args.batch_size),
                         ("spliced_sequences", args.spliced_sequences)):
        if value is not None:
            sizes = dataclasses.replace(sizes, **{field: value})
    tag = ("family_quick" if args.quick else "family_small" if args.small
           else "family_medium" if args.medium else "family")
    out = args.out or RESULTS / tag
    cache_path = args.cache or cache_dir() / "benchmarks" / (
        f"family-{'+'.join(args.hookpoints)}-{sizes.harvest_tokens}-{sizes.context_len}")
    started = time.perf_counter()
    if args.from_partial:
        runs = json.loads(args.from_partial.read_text())["runs"]
        args.hookpoints = sorted({r["hookpoint"] for r in runs}, key=args.hookpoints.index)
        finish(runs, {}, args, sizes, cache_path, out, started)
        return
    torch.manual_seed(0)
    loaded = load_model(MODEL, dtype="float32")
    cache = open_cache(cache_path, sizes, args.hookpoints, loaded, args.allow_incomplete)
    args.cache_tokens = {"train": cache.n_rows("train"), "heldout": cache.n_rows("heldout")}
    partial = out.with_suffix(".partial.json")
    runs = json.loads(partial.read_text())["runs"] if args.resume and partial.exists() else []
    done = {run_key(r) for r in runs}
    mdl_coefs = tuple(args.mdl_coefs) if args.mdl_coefs else MDL_COEFS
    for hookpoint in args.hookpoints:
        for level in dict.fromkeys(sizes.levels):  # one group per distinct level
            members = []
            for index in (i for i, v in enumerate(sizes.levels) if v == level):
                for name in args.variants:
                    if name in args.one_level and index != len(sizes.levels) // 2:
                        continue
                    settings = level_settings(name, level, index, mdl_coefs)
                    key = run_key({"variant": name, "hookpoint": hookpoint, "level": level,
                                   "settings": settings})
                    if key not in done and (name, settings) not in members:
                        members.append((name, settings))
            if not members:
                continue
            started_group = time.perf_counter()
            trained = train_group(members, cache, hookpoint, sizes)
            print(f"{hookpoint} level {level}: {len(members)} dictionaries trained together in "
                  f"{time.perf_counter() - started_group:.0f} s (load {os.getloadavg()[0]:.1f})",
                  flush=True)
            for (name, settings), (dictionary, seconds) in zip(members, trained):
                if dictionary is None:
                    continue
                spliced = level in (args.spliced_levels or sizes.levels)
                metrics = evaluate(dictionary, cache, loaded, hookpoint, sizes if spliced
                                   else dataclasses.replace(sizes, spliced_sequences=0))
                runs.append({"variant": name, "hookpoint": hookpoint, "level": level,
                             "settings": settings, "n_latents": sizes.n_latents,
                             "train_tokens": sizes.train_tokens, "train_seconds": seconds,
                             "load_average": os.getloadavg(), **metrics})
                print(f"{name} {hookpoint} {settings}: L0 {metrics['l0']:.1f}, FVU "
                      f"{metrics['fvu']:.3f}, loss recovered {metrics['loss_recovered']:.3f} "
                      f"({seconds:.0f} s of steps)", flush=True)
                atomic_write_json(partial, {"runs": runs})
    encoder = {}
    if "kronsae" in args.variants:
        for name in ("topk", "kronsae"):
            model = build(name, d_in=640, n_latents=sizes.n_latents, k=32)
            encoder[name] = encoder_seconds(model, cache, args.hookpoints[0])
    finish(runs, encoder, args, sizes, cache_path, out, started)


def finish(runs: list[dict[str, Any]], encoder: dict[str, float], args: argparse.Namespace,
           sizes: Sizes, cache_path: Path, out: Path, started: float) -> None:
    """Judge the claims, print the tables, write the JSON and the plot."""
    judge(runs)
    print_table(runs)
    print_added(runs, encoder)
    record = {"model": MODEL, "hookpoints": args.hookpoints, "cache": str(cache_path),
              "cache_tokens": getattr(args, "cache_tokens", None),
              "sizes": sizes.__dict__, "runs": runs, "encoder_seconds_2048_tokens": encoder,
              "finite": all(math.isfinite(r["fvu"]) for r in runs),
              "wall_seconds": time.perf_counter() - started,
              "load_average": os.getloadavg(),
              "note": "shared 2-core machine (other agents' jobs running): timings indicative"}
    atomic_write_json(out.with_suffix(".json"), record)
    plot(runs, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
