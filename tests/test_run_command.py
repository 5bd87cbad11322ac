"""`sparselens run`: its one-line summary (both dead fractions, each said for what it is) and
its early option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparselens.cli.commands import run


def write_eval(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"reconstruction": {"fvu": 0.058, "l0": 32.0, "dead_fraction": 0.156,
                                 "n_tokens": 27681},
              "spliced": {"loss_recovered": 0.974}}
    path = folder / "eval.json"
    path.write_text(json.dumps(record))
    return path


def test_summary_reports_training_and_held_out_dead_fractions(tmp_path, capsys) -> None:
    eval_path = write_eval(tmp_path / "sae")
    lines = [{"step": 1, "dead_fraction": 0.0}, {"step": 2, "dead_fraction": 0.058}, {}]
    (tmp_path / "sae" / "metrics.jsonl").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n")
    run._summary(eval_path, tmp_path / "report")
    out = capsys.readouterr().out
    assert "dead 5.8% in training (15.6% unfired on 27,681 held-out tokens)" in out
    assert "FVU 0.058" in out and "loss recovered 0.974" in out


def test_summary_without_a_training_log(tmp_path, capsys) -> None:
    run._summary(write_eval(tmp_path / "sae"), tmp_path / "report")
    out = capsys.readouterr().out
    assert "15.6% unfired on 27,681 held-out tokens" in out and "in training" not in out


def test_a_bad_autocast_dtype_stops_before_harvesting(tmp_path) -> None:
    with pytest.raises(ValueError, match="autocast must be one of .*'float64'"):
        run.run(run.Config(out=str(tmp_path / "out"), autocast="float64"))
    assert not (tmp_path / "out").exists()


def test_next_steps_are_commands_the_cli_accepts(tmp_path, capsys) -> None:
    import shlex

    from sparselens.cli.main import make_parser

    run._next_steps(tmp_path / "sae", tmp_path / "cache")
    commands = [line.strip() for line in capsys.readouterr().out.splitlines()
                if line.strip().startswith("sparselens ")]
    assert len(commands) == 4
    parser, _ = make_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])  # exits (fails) on a bad option
        assert args.command in command
