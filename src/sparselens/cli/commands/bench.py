"""``sparselens bench SAE [SAE ...] --cache CACHE``: the evaluation suite, one JSON each."""

from __future__ import annotations

from dataclasses import dataclass, field

NAME = "bench"
HELP = ("Run the evaluation suite (reconstruction, geometry, dark matter, sparse probing, TPP, "
        "SCR, absorption, seed consistency) on dictionaries; writes OUT/<name>.json per "
        "dictionary and OUT/index.html comparing them against L0 (docs/evaluation.md).")


@dataclass
class Config:
    dictionaries: list[str] = field(default_factory=list, metadata={"positional": True})
    """Dictionary folders (native, SAELens, ...) trained on the cache's model and hookpoint."""
    cache: str = ""
    """Activation cache with held-out sequences at the dictionaries' hookpoint (required)."""
    out: str = "bench"
    """Output folder: one JSON per dictionary, index.html, pareto.png, cache/ of metric results."""
    suite: list[str] = field(default_factory=lambda: ["all"])
    """Metrics to run: all (every one but synthetic), or any of reconstruction geometry
    dark_matter probing tpp scr absorption consistency synthetic (trains the dictionary's
    architecture on synthetic ground truth and scores recovery; minutes)."""
    tasks: list[str] = field(default_factory=lambda: ["reference_section", "code_language",
                                                      "natural_language", "sentiment"])
    """Built-in labelled tasks for sparse probing and TPP."""
    task_files: list[str] = field(default_factory=list)
    """Your own labelled tasks: CSV (header text,label[,document]) or JSONL with those keys."""
    max_per_class: int = 100
    """Texts per class and task (subsampled with the seed)."""
    max_length: int = 64
    """Tokens per text for probing (longer texts are cut)."""
    heldout_tokens: int = 16384
    """Held-out cache tokens for reconstruction, geometry and dark matter."""
    absorption_words: int = 200
    """Vocabulary words per first letter for absorption."""
    batch_size: int = 16
    """Texts per model forward."""
    synthetic_tokens: int = 1_000_000
    """Training tokens of the synthetic-recovery run (--suite synthetic)."""
    model_dtype: str = "float32"
    """Dtype to load the model in."""
    device: str = "cpu"
    """Device for the model and dictionaries."""
    seed: int = 0
    """Seed for subsampling and splits."""
    progress: bool = True
    """Show progress bars."""
    beside: bool = True
    """Also write each record as bench.json into its dictionary's folder (the HTML report
    shows it in its evaluation section)."""


def run(cfg: Config) -> int:
    from sparselens.evaluation.absorption import AbsorptionConfig
    from sparselens.evaluation.bench import run_bench
    from sparselens.evaluation.bench_page import headline_metrics
    from sparselens.evaluation.suite import DEFAULT_SUITES, SuiteConfig

    if not cfg.dictionaries or not cfg.cache:
        raise ValueError("give dictionaries and a cache: sparselens bench SAE [SAE ...] "
                         "--cache CACHE")
    suites = tuple(dict.fromkeys(
        s for name in cfg.suite for s in (DEFAULT_SUITES if name == "all" else (name,))))
    suite_cfg = SuiteConfig(suites=suites, tasks=tuple(cfg.tasks),
                            task_files=tuple(cfg.task_files), max_per_class=cfg.max_per_class,
                            max_length=cfg.max_length, heldout_tokens=cfg.heldout_tokens,
                            absorption=AbsorptionConfig(max_words_per_letter=cfg.absorption_words,
                                                        seed=cfg.seed),
                            batch_size=cfg.batch_size, synthetic_tokens=cfg.synthetic_tokens,
                            seed=cfg.seed, progress=cfg.progress)
    result = run_bench(cfg.dictionaries, cfg.cache, cfg.out, suite_cfg, device=cfg.device,
                       model_dtype=cfg.model_dtype, beside=cfg.beside)
    for name, record in result.records.items():
        print(f"{name}: {result.paths[name]}")
        for label, value in headline_metrics(record).items():
            if value is not None:
                shown = f"{value:.4g}" if isinstance(value, float) else value
                print(f"  {label}: {shown}")
    if result.page:
        print(f"comparison page: {result.page}")
    return 0
