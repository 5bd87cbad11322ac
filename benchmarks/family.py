"""Every dictionary variant on the same activations: FVU and loss recovered against L0.

Harvests the embedded gemma-3-270m once at one hookpoint (default resid.6, 200k tokens of the
built-in corpus; reused if the cache exists), trains every registered variant of the family
at a few sparsity levels with the library's Trainer, and measures on held-out tokens:

- FVU and L0 from `reconstruction_metrics` (codes from ``encode``: the inference path, so
  BatchTopK-style variants are measured with their saved thresholds);
- loss recovered (and spliced CE) from `spliced_metrics` on held-out sequences.

Sparsity levels: k-sparse variants use k = level; JumpReLU uses its `target_l0` option (the
L0 penalty itself has no L0 knob) with a bandwidth and initial threshold suited to the
trainer's normalisation (mean norm sqrt(d): the paper's 0.001 is tiny next to such codes, and
a short run cannot move θ far); the L1-type penalties (relu, relu_dn, gated, p_anneal) use a
grid of coefficients, one per level (rough calibration on a small run), and top_afa (no k) a
grid of AFA weights, so their L0 is whatever training gives: the table reports measured L0,
never the requested one.

Cost: most variants train at about the speed of TopK; ``mp`` runs k encoder-sized products per
step (k pursuit steps), so at k = 64 it dominates a full run; leave it out with ``--variants``
when time is short.

Writes ``benchmarks/results/family.json`` and ``family.png`` (``--medium``: 400k training
tokens a run, written to ``family_medium.*``; ``--quick``: tiny sizes, to check that the script
works, written to ``family_quick.*``). Timings on a shared machine are
only indicative.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.evaluation.spliced import spliced_metrics
from sparselens.io.atomic import atomic_open, atomic_write_json
from sparselens.models.source import LoadedModel, cache_dir, load_model
from sparselens.training.config import CheckpointConfig, LogConfig, OptimConfig, TrainConfig
from sparselens.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
MODEL = "gemma-3-270m"
FAMILY = ("relu", "relu_dn", "topk", "batchtopk", "multi_topk", "abstopk", "matryoshka",
          "jumprelu", "gated", "p_anneal", "feature_choice", "mutual_choice", "top_afa", "mp",
          "archetypal", "variational")
K_SPARSE = {"topk", "batchtopk", "multi_topk", "abstopk", "matryoshka", "feature_choice",
            "mutual_choice", "mp", "archetypal", "variational"}
# One coefficient per sparsity level (sparsest first), for inputs normalised to mean norm
# sqrt(d) as the trainer does; larger coefficients give sparser codes. Calibrated roughly on
# 150 steps of a 1024-latent run (relu 2.0 -> L0 19, 0.5 -> 76; relu_dn 8 -> 18, 2 -> 148;
# gated 2 -> 35; p_anneal 2 -> 15).
L1_COEFS = {"relu": (2.0, 1.0, 0.5), "relu_dn": (8.0, 4.0, 2.0), "gated": (4.0, 2.0, 1.0),
            "p_anneal": (2.0, 1.0, 0.5)}
JUMPRELU = {"sparsity_coef": 1.0, "bandwidth": 0.05, "initial_threshold": 0.5}
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
# A third of FULL's training tokens in smaller batches (the same number of steps within 25%):
# the whole family in about an hour on 2 cores instead of several.
MEDIUM = Sizes(200_000, 128, 4096, 400_000, 2048, (16, 32, 64), 8)
QUICK = Sizes(6_000, 64, 256, 8_192, 512, (16,), 1)


def level_settings(name: str, level: int, index: int) -> dict[str, Any]:
    """The variant's config fields for the `index`-th sparsity level (L0 ≈ `level`)."""
    if name in K_SPARSE:
        return {"k": level}
    if name == "jumprelu":
        return {"target_l0": float(level), **JUMPRELU}
    if name == "top_afa":
        return {"afa_coef": AFA_COEFS[index % len(AFA_COEFS)]}
    return {"sparsity_coef": L1_COEFS[name][index % len(L1_COEFS[name])]}


def open_cache(path: Path, sizes: Sizes, hookpoint: str, loaded: LoadedModel) -> ActivationCache:
    """The activation cache at `path`, harvested first if it is missing or incomplete."""
    manifest = path / "manifest.json"
    if not (manifest.exists() and json.loads(manifest.read_text()).get("complete")):
        from sparselens.data.chunking import chunk_texts
        from sparselens.data.corpus import CorpusConfig, iter_texts
        from sparselens.data.harvest import HarvestConfig, harvest

        chunks = chunk_texts(iter_texts(CorpusConfig()), loaded.tokenizer, sizes.context_len)
        needed = 2 * sizes.harvest_tokens // sizes.context_len + 1
        harvest(loaded, islice(chunks, needed), [hookpoint], path,
                HarvestConfig(max_tokens=sizes.harvest_tokens, progress=False))
    return ActivationCache.open(path)


def train(name: str, settings: dict[str, Any], cache: ActivationCache,
          sizes: Sizes) -> tuple[Dictionary, float]:
    cfg = TrainConfig(architecture=name, n_latents=sizes.n_latents, dictionary=settings,
                      n_tokens=sizes.train_tokens, batch_size=sizes.batch_size,
                      optim=OptimConfig(), checkpoint=CheckpointConfig(every_steps=0),
                      log=LogConfig(progress=False, every_steps=10_000))
    start = time.perf_counter()
    data = training_data(cache, Sites.from_cache(cache, cfg), cfg.batch_size, cfg.seed)
    dictionary = Trainer(cfg, data).fit()
    return dictionary, time.perf_counter() - start


def evaluate(dictionary: Dictionary, cache: ActivationCache, loaded: LoadedModel,
             hookpoint: str, sizes: Sizes) -> dict[str, Any]:
    site = cache.hookpoints[0]
    batches = cache.batches(sizes.batch_size, hookpoints=[site], split="heldout", shuffle=False)
    recon = reconstruction_metrics(dictionary, batches, site)
    heldout = cache.tokens()[cache.is_heldout(torch.arange(cache.n_sequences))]
    sequences = list(heldout[: sizes.spliced_sequences])
    spliced = spliced_metrics(dictionary, loaded, hookpoint, sequences)
    return {"l0": recon["l0"], "fvu": recon["fvu"], "dead_fraction": recon["dead_fraction"],
            "loss_recovered": spliced["loss_recovered"], "ce_clean": spliced["ce_clean"],
            "ce_spliced": spliced["ce_spliced"], "kl_spliced": spliced["kl_spliced"]}


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    cmap = plt.get_cmap("tab20")
    markers = "osD^vP*X"
    for i, name in enumerate(sorted({r["variant"] for r in runs})):
        mine = sorted((r for r in runs if r["variant"] == name), key=lambda r: r["l0"])
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
    fig.suptitle("sparselens dictionary family on gemma-3-270m activations")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def print_table(runs: list[dict[str, Any]]) -> None:
    print(f"{'variant':15s} {'setting':32s} {'L0':>7s} {'FVU':>7s} {'loss rec':>9s} "
          f"{'dead %':>7s} {'train s':>8s}")
    for r in runs:
        setting = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["settings"].items())
        print(f"{r['variant']:15s} {setting:32.32s} {r['l0']:7.1f} {r['fvu']:7.3f} "
              f"{r['loss_recovered']:9.3f} {100 * r['dead_fraction']:7.1f} "
              f"{r['train_seconds']:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check it runs")
    parser.add_argument("--medium", action="store_true",
                        help="400k training tokens per run instead of 1M (about an hour)")
    parser.add_argument("--levels", type=int, nargs="+", default=None,
                        help="sparsity levels (L0 targets) instead of the preset's")
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--cache", type=Path, default=None,
                        help="activation cache folder (harvested if missing)")
    parser.add_argument("--variants", nargs="+", default=list(FAMILY), choices=sorted(REGISTRY))
    parser.add_argument("--out", type=Path, default=None, help="results path without suffix")
    args = parser.parse_args()
    sizes = QUICK if args.quick else MEDIUM if args.medium else FULL
    if args.levels:
        sizes = dataclasses.replace(sizes, levels=tuple(args.levels))
    tag = "family_quick" if args.quick else "family_medium" if args.medium else "family"
    out = args.out or RESULTS / tag
    cache_path = args.cache or cache_dir() / "benchmarks" / (
        f"family-{args.hookpoint}-{sizes.harvest_tokens}-{sizes.context_len}")
    torch.manual_seed(0)
    loaded = load_model(MODEL, dtype="float32")
    cache = open_cache(cache_path, sizes, args.hookpoint, loaded)
    runs = []
    for name in args.variants:
        for index, level in enumerate(sizes.levels):
            settings = level_settings(name, level, index)
            dictionary, seconds = train(name, settings, cache, sizes)
            metrics = evaluate(dictionary, cache, loaded, args.hookpoint, sizes)
            runs.append({"variant": name, "level": level, "settings": settings,
                         "train_seconds": seconds, **metrics})
            print(f"{name} {settings}: L0 {metrics['l0']:.1f}, FVU {metrics['fvu']:.3f}, "
                  f"loss recovered {metrics['loss_recovered']:.3f}", flush=True)
    print_table(runs)
    record = {"model": MODEL, "hookpoint": args.hookpoint, "cache": str(cache_path),
              "quick": args.quick, "sizes": sizes.__dict__, "runs": runs,
              "finite": all(math.isfinite(r["fvu"]) for r in runs)}
    atomic_write_json(out.with_suffix(".json"), record)
    plot(runs, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
