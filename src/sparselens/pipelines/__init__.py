"""Whole jobs as library functions: each takes a config dataclass and returns a result object.

`run` (harvest -> train -> evaluate -> report), `diff` (two models, one crosscoder), and the
stages they share: `harvest`, `train`, `evaluate`, `report`. The CLI commands
(`sparselens.cli.commands`) only parse options into these configs, call them and print.
"""
