"""`run_bench`: the whole suite for several dictionaries, one JSON record each, and a page.

The pipeline behind ``sparselens bench``; see suite.py for caching and the record checks,
and docs/evaluation.md for every metric.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.data.cache import ActivationCache
from sparselens.evaluation import absorption as absorption_metric
from sparselens.evaluation.consistency import consistency_metrics
from sparselens.evaluation.dark_matter import dark_matter_metrics
from sparselens.evaluation.features import PooledFeatures, pooled_features, position_features
from sparselens.evaluation.geometry import geometry_metrics
from sparselens.evaluation.probing import sparse_probing, summarise_tasks
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.evaluation.results import results_record, write_results
from sparselens.evaluation.suite import (
    SECTIONS,
    Entry,
    MetricCache,
    SuiteConfig,
    cache_checksum,
    check_bench_record,
    check_model_and_site,
    config_key,
    load_entries,
)
from sparselens.evaluation.synthetic import recovery_of_architecture
from sparselens.evaluation.tasks import (
    LabelledTask,
    builtin_tasks,
    load_labelled_file,
    topic_sentiment_task,
)
from sparselens.evaluation.tpp_scr import scr_metrics, tpp_metrics
from sparselens.models.source import LoadedModel

LENS_SUITES = {"probing", "tpp", "scr", "absorption"}


@dataclass
class BenchResult:
    records: dict[str, dict[str, Any]]
    paths: dict[str, Path]
    page: Path | None


def effective_decoder(entry: Entry) -> Tensor:
    """Decoder rows in the units of the raw activations (``decode`` divides by output_scale)."""
    d = entry.dictionary
    return d.W_dec.detach().float().cpu() / d.cfg.output_scale


class Bench:
    """State shared by the metrics of one run: data, features computed so far, the lens."""

    def __init__(self, paths: Sequence[str | Path], cache_path: str | Path, out: Path,
                 cfg: SuiteConfig, loaded: LoadedModel | None, device: str,
                 model_dtype: str) -> None:
        self.cfg, self.out = cfg, out
        self.cache = ActivationCache.open(cache_path)
        self.entries = load_entries(paths, device=device)
        if not self.entries:
            raise ValueError("give at least one dictionary")
        self.sites = {e.name: check_model_and_site(e, self.cache) for e in self.entries}
        self.metric_cache = MetricCache(out / "cache")
        self.data_key = cache_checksum(self.cache)
        self._loaded, self._device, self._dtype = loaded, device, model_dtype
        self._lens: Any = None
        self._features: dict[tuple[str, str], PooledFeatures] = {}
        self._heldout: dict[str, Tensor] = {}
        self._encoded: dict[str, tuple[Tensor, Tensor]] = {}
        self.tasks, self.skipped_tasks = self._tasks()
        self._letters: absorption_metric.LetterWords | None = None

    # ---- data ----

    def _tasks(self) -> tuple[list[LabelledTask], dict[str, str]]:
        if not {"probing", "tpp"} & set(self.cfg.suites):
            return [], {}
        tasks, skipped = builtin_tasks(list(self.cfg.tasks), max_per_class=self.cfg.max_per_class,
                                       seed=self.cfg.seed)
        for path in self.cfg.task_files:
            task = load_labelled_file(path)
            try:
                task.check()
                task.split()
                tasks.append(task.subsample(self.cfg.max_per_class, self.cfg.seed))
            except ValueError as error:
                skipped[task.name] = str(error)
        return tasks, skipped

    def lens(self):
        if self._lens is None:
            from sparselens.lens import Lens
            from sparselens.models.source import load_model

            loaded = self._loaded
            if loaded is None:
                model = self.cache.manifest.get("model")
                if not isinstance(model, str):
                    raise ValueError(f"the cache names model(s) {model!r}; load the model and "
                                     "pass it in")
                loaded = load_model(model, dtype=self._dtype, device=self._device)
            self._lens = Lens(loaded)
            for entry in self.entries:
                self._lens.attach(entry.name, entry.dictionary)
        return self._lens

    def heldout(self, site: str) -> Tensor:
        if site not in self._heldout:
            rows, have = [], 0
            for batch in self.cache.batches(4096, hookpoints=[site], split="heldout",
                                            shuffle=False):
                rows.append(batch.acts[site].float())
                have += len(batch)
                if have >= self.cfg.heldout_tokens:
                    break
            if not rows:
                raise ValueError("the cache has no held-out tokens; re-harvest with a held-out "
                                 "fraction")
            self._heldout[site] = torch.cat(rows)[: self.cfg.heldout_tokens]
        return self._heldout[site]

    def features(self, entry: Entry, task: LabelledTask) -> PooledFeatures:
        key = (entry.name, task.checksum())
        if key not in self._features:
            self._features[key] = pooled_features(
                self.lens(), entry.name, task.texts, batch_size=self.cfg.batch_size,
                max_length=self.cfg.max_length, progress=self.cfg.progress,
                desc=f"{entry.name}: {task.name}")
        return self._features[key]

    def letters(self) -> absorption_metric.LetterWords:
        if self._letters is None:
            self._letters = absorption_metric.first_letter_dataset(self.lens().tokenizer,
                                                                   self.cfg.absorption)
        return self._letters

    # ---- metrics ----

    def _codes(self, entry: Entry, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes and reconstructions of held-out `x` (computed once per dictionary)."""
        if entry.name not in self._encoded:
            self._encoded[entry.name] = self._encode(entry, x)
        return self._encoded[entry.name]

    def _encode(self, entry: Entry, x: Tensor) -> tuple[Tensor, Tensor]:
        d = entry.dictionary
        device, dtype = d.W_dec.device, d.W_dec.dtype
        codes, recon = [], []
        with torch.no_grad(), d.evaluating():
            for chunk in x.split(4096):
                chunk = chunk.to(device, dtype)
                codes.append(d.encode(chunk).float().cpu())
                recon.append(d(chunk).float().cpu())
        return torch.cat(codes), torch.cat(recon)

    def reconstruction(self, entry: Entry) -> dict[str, Any]:
        site = self.sites[entry.name]
        batches = self.cache.batches(4096, hookpoints=[site], split="heldout", shuffle=False)
        result = reconstruction_metrics(entry.dictionary, batches, site,
                                        dense_threshold=self.cfg.dense_threshold,
                                        max_tokens=self.cfg.heldout_tokens)
        result["latent_density"] = result["latent_density"].tolist()  # JSON-cacheable
        return result

    def geometry(self, entry: Entry) -> dict[str, Any]:
        codes, _ = self._codes(entry, self.heldout(self.sites[entry.name]))
        return geometry_metrics(entry.dictionary.W_dec, codes,
                                dense_threshold=self.cfg.dense_threshold)

    def dark_matter(self, entry: Entry) -> dict[str, Any]:
        if entry.dictionary.cfg.d_out != entry.dictionary.cfg.d_in:
            raise ValueError("dark matter is defined for autoencoders (error = input − output)")
        x = self.heldout(self.sites[entry.name])
        _, recon = self._codes(entry, x)
        return dark_matter_metrics(x, x - recon, seed=self.cfg.seed)

    def probing(self, entry: Entry) -> dict[str, Any]:
        per_task, skipped = {}, dict(self.skipped_tasks)
        for task in self.tasks:
            f = self.features(entry, task)
            try:
                per_task[task.name] = sparse_probing(task, f.codes, f.activations,
                                                     seed=self.cfg.seed)
            except ValueError as error:
                skipped[task.name] = str(error)
        if not per_task:
            raise ValueError(f"no task could be probed: {skipped}")
        return {**summarise_tasks(per_task), "tasks": per_task, "skipped_tasks": skipped}

    def tpp(self, entry: Entry) -> dict[str, Any]:
        per_task, skipped = {}, dict(self.skipped_tasks)
        for task in self.tasks:
            f = self.features(entry, task)
            try:
                per_task[task.name] = tpp_metrics(task, f.codes, f.activations,
                                                  effective_decoder(entry), seed=self.cfg.seed)
            except ValueError as error:
                skipped[task.name] = str(error)
        if not per_task:
            raise ValueError(f"no task supports TPP: {skipped}")
        keys = [k for k in next(iter(per_task.values())) if k.startswith("tpp_")]
        means = {k: sum(r[k] for r in per_task.values()) / len(per_task) for k in keys}
        return {**means, "tasks": per_task, "skipped_tasks": skipped}

    def scr(self, entry: Entry) -> dict[str, Any]:
        task = topic_sentiment_task()
        f = self.features(entry, task)
        return {**scr_metrics(task, f.codes, f.activations, effective_decoder(entry),
                              seed=self.cfg.seed), "task": task.name}

    def absorption(self, entry: Entry) -> dict[str, Any]:
        data = self.letters()
        f = position_features(self.lens(), entry.name, data.sequences, data.positions,
                              batch_size=2 * self.cfg.batch_size, progress=self.cfg.progress,
                              desc=f"{entry.name}: first letters")
        return absorption_metric.absorption_metrics(data, f.codes, f.activations,
                                                    effective_decoder(entry),
                                                    self.cfg.absorption)

    def consistency(self, entry: Entry) -> dict[str, Any]:
        others = [e for e in self.entries if e is not entry
                  and e.dictionary.W_dec.shape[1] == entry.dictionary.W_dec.shape[1]]
        if not others:
            raise ValueError("consistency needs two or more dictionaries of the same site "
                             "(e.g. seeds); give them together")
        against = {o.name: consistency_metrics(entry.dictionary.W_dec, o.dictionary.W_dec)
                   for o in others}
        return {"against": against,
                "mean_pw_mcc": sum(r["pw_mcc"] for r in against.values()) / len(against),
                "mean_fraction_matched": sum(r["fraction_matched"] for r in against.values())
                / len(against)}

    def synthetic(self, entry: Entry) -> dict[str, Any]:
        return recovery_of_architecture(entry.dictionary.architecture, entry.dictionary.cfg,
                                        n_tokens=self.cfg.synthetic_tokens,
                                        n_latents=self.cfg.synthetic_latents, seed=self.cfg.seed)

    def data_keys(self, suite: str) -> Any:
        if suite in ("reconstruction", "geometry", "dark_matter"):
            return self.data_key
        if suite in ("probing", "tpp"):
            return [t.checksum() for t in self.tasks]
        if suite == "scr":
            return topic_sentiment_task().checksum()
        if suite == "absorption":
            return str(self.cache.manifest.get("model"))
        if suite == "synthetic":
            return "synthetic"  # generated from the settings alone
        return sorted(e.checksum for e in self.entries)


SECTION_OF = {"probing": "sparse_probing"}


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dictionary"


def run_bench(paths: Sequence[str | Path], cache: str | Path, out: str | Path,
              cfg: SuiteConfig | None = None, *, loaded: LoadedModel | None = None,
              device: str = "cpu", model_dtype: str = "float32",
              page: bool = True, beside: bool = True) -> BenchResult:
    """Every chosen metric for every dictionary; writes ``OUT/<name>.json`` per dictionary
    and ``OUT/index.html``. `beside`: also write each record as ``bench.json`` into its
    dictionary's folder, where `sparselens report` finds it (skipped, with a warning, if the
    folder is not writable)."""
    cfg = cfg or SuiteConfig()
    out = Path(out)
    bench = Bench(paths, cache, out, cfg, loaded, device, model_dtype)
    if LENS_SUITES & set(cfg.suites):
        bench.lens()  # load the model before the progress bars start
    records, written = {}, {}
    steps = [(e, s) for e in bench.entries for s in cfg.suites]
    results: dict[str, dict[str, Any]] = {e.name: {} for e in bench.entries}
    for entry, suite in tqdm(steps, desc="bench", disable=not cfg.progress):
        key = {"dictionary": entry.checksum, "data": bench.data_keys(suite),
               "config": config_key(cfg), "suite": suite}
        results[entry.name][suite] = bench.metric_cache.get_or_run(
            f"{safe_name(entry.name)}-{suite}", key, functools.partial(
                getattr(bench, suite), entry))
    for entry in bench.entries:
        done = results[entry.name]
        recon = done.get("reconstruction")
        if recon is not None and isinstance(recon.get("latent_density"), list):
            recon = {**recon, "latent_density": torch.tensor(recon["latent_density"])}
        record = results_record(_checkpoint(entry), {
            "cache": str(Path(cache).resolve()), "split": "heldout",
            "hookpoint": bench.sites[entry.name], "target_hookpoint": None,
            "cache_sha256": bench.data_key}, recon, None)
        for suite in cfg.suites:
            if suite != "reconstruction":
                record[SECTION_OF.get(suite, suite)] = done[suite]
        for section in SECTIONS:
            record.setdefault(section, None)
        record["bench"] = {"config": config_key(cfg), "suites": list(cfg.suites),
                           "seconds": {s: r.get("seconds") for s, r in done.items()},
                           "cpu_seconds": {s: r.get("cpu_seconds") for s, r in done.items()},
                           "cached": {s: r.get("cached") for s, r in done.items()},
                           "loadavg": {s: r.get("loadavg") for s, r in done.items()},
                           "skipped_tasks": bench.skipped_tasks}
        check_bench_record(record)
        written[entry.name] = write_results(out / f"{safe_name(entry.name)}.json", record)
        if beside:
            _write_beside(entry, record)
        records[entry.name] = record
    page_path = None
    if page:
        from sparselens.evaluation.bench_page import write_comparison

        page_path = write_comparison(records, out)
    return BenchResult(records, written, page_path)


def _checkpoint(entry: Entry) -> dict[str, Any]:
    c = entry.dictionary.cfg
    return {"path": str(entry.path.resolve()), "name": entry.name,
            "architecture": entry.dictionary.architecture, "d_in": c.d_in, "d_out": c.d_out,
            "n_latents": c.n_latents, "hookpoint": c.hookpoint,
            "target_hookpoint": c.target_hookpoint, "weights_sha256": _weights_sha256(entry),
            "dictionary_sha256": entry.checksum}


def _weights_sha256(entry: Entry) -> str | None:
    """The native checkpoint's recorded weight checksum, if it has one."""
    from sparselens.io.atomic import read_json
    from sparselens.io.native import CONFIG_FILE

    config = entry.path / CONFIG_FILE
    if not config.exists():
        return None
    meta = read_json(config, "checkpoint config")
    return meta.get("weights_sha256") if isinstance(meta, dict) else None


def _write_beside(entry: Entry, record: dict[str, Any]) -> None:
    """``<dictionary>/bench.json``: the copy the HTML report reads."""
    from sparselens.evaluation.bench_page import BESIDE_NAME

    if not entry.path.is_dir():
        return
    try:
        write_results(entry.path / BESIDE_NAME, record)
    except OSError as error:
        warnings.warn(f"could not write {entry.path / BESIDE_NAME} ({error}); the report of "
                      "this dictionary will not show the bench results unless given --bench",
                      stacklevel=2)
