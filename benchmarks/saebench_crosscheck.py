"""Cross-check sparse probing and absorption against the PyPI `sae-bench` package.

Both sides get the same tensors. This script (in the project venv) encodes texts with the
`make run` dictionary, computes sparselens's numbers and saves the tensors to a file; then it
runs itself under the sae-bench venv (``/work/venvs/saebench``: sae-bench 0.6.0 with the CPU
torch, never a project dependency) with ``--reference``, where only torch and sae_bench are
imported:

- sparse probing: for every class of every task, on our balanced train/test rows, SAEBench's
  `probe_training.get_top_k_mean_diff_mask` picks the k latents and its
  `probe_training.train_sklearn_probe` fits and scores the probe; compared with our
  `sae_top_{k}` accuracy per class. Tolerance: 0.01 (both are scikit-learn logistic
  regressions; float32 vs float64 inputs can flip a borderline test prediction).
- absorption: SAEBench's `FeatureAbsorptionCalculator.calculate_absorption` is fed our word
  activations and codes (through a stand-in model and SAE that return them) with our letter
  probes and main latents; its per-word absorption fractions and full-absorption flags are
  aggregated as its `_aggregate_results_df` does and compared with our per-letter numbers.
  Tolerance: 1e-6 (the same arithmetic). The probe training and the choice of main latents
  are not cross-checked (SAEBench trains them with minibatch Adam on a GPU; ours differ by
  optimiser, so only the definitions downstream of them are compared exactly).

``--planted`` uses planted tensors instead of the model (no forward pass; the comparison of the
two implementations is the same). Writes ``benchmarks/results/saebench_crosscheck.json``
(``saebench_crosscheck_planted.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
SAEBENCH_PYTHON = Path("/work/venvs/saebench/bin/python")
TENSORS = Path("/tmp/sparselens-saebench-crosscheck.pt")
KS = (1, 2, 5, 10)


def probing_part(task, codes: torch.Tensor, acts: torch.Tensor, saved: dict,
                 ours: dict) -> None:
    """Our sparse-probing accuracies per class, and the rows the reference side needs."""
    from sparselens.evaluation.probing import binary_tasks, sparse_probing

    result = sparse_probing(task, codes, acts, ks=KS)
    for cls, (tr, ytr, te, yte) in binary_tasks(task, task.split(), 0).items():
        if cls not in result["per_class"]:
            continue
        saved["probing"].append({"task": task.name, "class": cls, "train": codes[tr],
                                 "train_y": torch.from_numpy(ytr), "test": codes[te],
                                 "test_y": torch.from_numpy(yte)})
        ours["probing"][f"{task.name}/{cls}"] = {
            k: result["per_class"][cls][f"sae_top_{k}_accuracy"] for k in KS}


def absorption_part(data, codes: torch.Tensor, acts: torch.Tensor, decoder: torch.Tensor,
                    cfg, saved: dict, ours: dict) -> None:
    """Our per-letter absorption, and the probes, main latents and rows behind it."""
    from sparselens.evaluation import absorption as ab

    result = ab.absorption_metrics(data, codes, acts, decoder, cfg)
    inputs = ab.absorption_inputs(data, codes, acts, cfg)
    letters = {ab.LETTERS[i]: {"rows": torch.from_numpy(inputs.missed[i]),
                               "n_true_positives": len(inputs.true_positives[i]),
                               "main": inputs.main[i], "probe": inputs.probe_weight[i]}
               for i in range(26)}
    saved["absorption"] = {"codes": codes, "acts": acts, "decoder": decoder,
                           "letters": letters}
    ours["absorption"] = {k: {"mean_absorption_fraction": v["mean_absorption_fraction"],
                              "full_absorption_rate": v["full_absorption_rate"]}
                          for k, v in result["per_letter"].items()}


def export_model(dictionary: Path, max_per_class: int, words: int) -> tuple[dict, dict]:
    """Tensors from the real model and dictionary."""
    from sparselens.evaluation import absorption as ab
    from sparselens.evaluation.bench import effective_decoder
    from sparselens.evaluation.features import pooled_features, position_features
    from sparselens.evaluation.suite import load_entries
    from sparselens.evaluation.tasks import builtin_tasks
    from sparselens.lens import Lens

    entry, = load_entries([dictionary])
    lens = Lens.load("gemma-3-270m")
    lens.attach("sae", entry.dictionary)
    saved: dict = {"probing": [], "absorption": {}}
    ours: dict = {"probing": {}, "absorption": {}}
    tasks, _ = builtin_tasks(["sentiment", "reference_section"], max_per_class=max_per_class)
    for task in tasks:
        f = pooled_features(lens, "sae", task.texts, max_length=64)
        probing_part(task, f.codes, f.activations, saved, ours)
    cfg = ab.AbsorptionConfig(max_words_per_letter=words)
    data = ab.first_letter_dataset(lens.tokenizer, cfg)
    f = position_features(lens, "sae", data.sequences, data.positions)
    absorption_part(data, f.codes, f.activations, effective_decoder(entry), cfg, saved, ours)
    return saved, ours


def export_planted(seed: int = 0) -> tuple[dict, dict]:
    """Planted tensors (no model): noisy class latents for probing; letter directions with
    some words absorbed by word-specific latents, plus partial absorption, for absorption."""
    import numpy as np

    from sparselens.evaluation import absorption as ab
    from sparselens.evaluation.tasks import LabelledTask

    gen = torch.Generator().manual_seed(seed)
    saved: dict = {"probing": [], "absorption": {}}
    ours: dict = {"probing": {}, "absorption": {}}
    n = 600
    labels = [f"c{i % 4}" for i in range(n)]
    task = LabelledTask("planted", [str(i) for i in range(n)], labels,
                        [f"d{i // 3}" for i in range(n)])
    codes = (torch.rand(n, 300, generator=gen) - 0.8).clamp_min(0)
    for i, label in enumerate(labels):  # weak, noisy class latents: accuracies below 1
        codes[i, 10 * int(label[1:]):10 * int(label[1:]) + 10] += 0.15 * torch.rand(
            10, generator=gen)
    probing_part(task, codes, torch.randn(n, 32, generator=gen), saved, ours)
    d, per_letter = 64, 40
    dirs = torch.linalg.qr(torch.randn(d, d, generator=gen))[0][:, :26].T
    letter = np.repeat(np.arange(26), per_letter)
    m = len(letter)
    acts = 5.0 * dirs[torch.from_numpy(letter)] + 0.3 * torch.randn(m, d, generator=gen)
    decoder = [dirs[i] for i in range(26)]
    codes = torch.zeros(m, 26 + m)
    for i in range(m):
        word = torch.randn(d, generator=gen)
        word -= (word @ dirs.T) @ dirs
        word /= word.norm()
        decoder.append((dirs[letter[i]] + word) / 2**0.5)
        kind = i % 10
        if kind == 0:   # fully absorbed
            acts[i] += 5.0 * word
            codes[i, 26 + i] = 5.0 * 2**0.5
        elif kind == 1:  # partly absorbed
            acts[i] += 3.0 * word
            codes[i, letter[i]] = 2.0
            codes[i, 26 + i] = 3.0 * 2**0.5
        else:
            codes[i, letter[i]] = 5.0
    order = np.random.default_rng(seed).permutation(m)
    data = ab.LetterWords([f"w{i}" for i in range(m)], letter, [[0]] * m, [0] * m,
                          np.sort(order[m // 4:]), np.sort(order[: m // 4]))
    absorption_part(data, codes, acts, torch.stack(decoder), ab.AbsorptionConfig(), saved,
                    ours)
    return saved, ours


def reference() -> None:
    """Runs under the sae-bench venv: SAEBench's functions on the saved tensors."""
    import sae_bench.evals.sparse_probing.probe_training as pt
    from sae_bench.evals.absorption.feature_absorption_calculator import (
        FeatureAbsorptionCalculator,
    )

    saved = torch.load(TENSORS, weights_only=False)
    out: dict = {"probing": {}, "absorption": {}}
    for row in saved["probing"]:
        accs = {}
        for k in KS:
            mask = pt.get_top_k_mean_diff_mask(row["train"], row["train_y"], k)
            train = pt.apply_topk_mask_reduce_dim(row["train"], mask)
            test = pt.apply_topk_mask_reduce_dim(row["test"], mask)
            _, acc = pt.train_sklearn_probe(train, row["train_y"].long(), test,
                                            row["test_y"].long())
            accs[k] = acc
        out["probing"][f"{row['task']}/{row['class']}"] = accs
    ab = saved["absorption"]

    class Model:  # returns our activations for the prompts, in order
        cfg = None

        def __init__(self) -> None:
            self.rows: list[int] = []

        def to_tokens(self, text: str):
            return torch.zeros(1, 3, dtype=torch.long)

        def run_with_cache(self, prompts, names_filter):
            acts = ab["acts"][self.rows[:len(prompts)]]
            self.rows = self.rows[len(prompts):]
            return None, {names_filter[0]: acts[:, None, :].expand(-1, 2, -1).contiguous()}

    class Sae:
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.W_dec = ab["decoder"]

        def encode(self, acts):
            return ab["codes"][self.pending[: acts.shape[0]]]

    model, sae = Model(), Sae()
    calc = FeatureAbsorptionCalculator(model=model, icl_word_list=["x", "y"], max_icl_examples=1,
                                       word_token_pos=-2, batch_size=10**9)
    for letter, info in ab["letters"].items():
        rows = info["rows"].tolist()
        if info["n_true_positives"] < 2:
            continue
        total_fraction, fulls = 0.0, 0
        if rows:
            model.rows = list(rows)
            sae.pending = rows
            result = calc.calculate_absorption(sae, [f"w{i}" for i in rows], info["probe"],
                                               info["main"], layer=0, show_progress=False)
            total_fraction = sum(r.absorption_fraction for r in result.word_results)
            fulls = sum(r.is_full_absorption for r in result.word_results)
        n = info["n_true_positives"]
        out["absorption"][letter] = {"mean_absorption_fraction": total_fraction / n,
                                     "full_absorption_rate": fulls / n}
    print(json.dumps(out))


def compare(ours: dict, theirs: dict) -> dict:
    probing = [abs(ours["probing"][key][k] - theirs["probing"][key][str(k)])
               for key in ours["probing"] for k in KS]
    absorption = [abs(ours["absorption"][letter][m] - theirs["absorption"][letter][m])
                  for letter in theirs["absorption"] if letter in ours["absorption"]
                  for m in ("mean_absorption_fraction", "full_absorption_rate")]
    return {"probing_max_abs_diff": max(probing), "probing_mean_abs_diff":
            sum(probing) / len(probing), "probing_comparisons": len(probing),
            "probing_within_0.01": max(probing) <= 0.01,
            "absorption_max_abs_diff": max(absorption) if absorption else None,
            "absorption_comparisons": len(absorption),
            "absorption_within_1e-6": bool(absorption) and max(absorption) <= 1e-6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dictionary", type=Path, default=Path("/work/main/runs/default/sae"))
    parser.add_argument("--max-per-class", type=int, default=60)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--planted", action="store_true",
                        help="planted tensors instead of the model (no model forward)")
    args = parser.parse_args()
    if args.reference:
        reference()
        return
    if not SAEBENCH_PYTHON.exists():
        sys.exit(f"{SAEBENCH_PYTHON} is missing: create the sae-bench venv first "
                 "(python -m venv /work/venvs/saebench; pip install torch==2.13.0 sae-bench)")
    saved, ours = (export_planted() if args.planted
                   else export_model(args.dictionary, args.max_per_class, args.words))
    torch.save(saved, TENSORS)
    env = {**os.environ, "JAXTYPING_DISABLE": "1"}
    done = subprocess.run([str(SAEBENCH_PYTHON), __file__, "--reference"], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the sae-bench side failed:\n{done.stderr[-3000:]}")
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    summary = compare(ours, theirs)
    for key, value in summary.items():
        print(f"{key}: {value}")
    from sparselens.io.atomic import atomic_write_json

    name = "saebench_crosscheck_planted.json" if args.planted else "saebench_crosscheck.json"
    atomic_write_json(RESULTS / name, {"tensors": "planted" if args.planted else
                                       str(args.dictionary), "summary": summary,
                                       "ours": ours, "sae_bench": theirs})


if __name__ == "__main__":
    main()
