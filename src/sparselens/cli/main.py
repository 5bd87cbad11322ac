"""The ``sparselens`` command. Each subcommand is a module in `sparselens.cli.commands`
exposing ``NAME``, ``HELP``, a ``Config`` dataclass and ``run(config)``; they are found by
scanning the package, so adding a command touches no shared file."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from sparselens.cli.options import add_options, build_config


def _commands() -> dict[str, object]:
    import sparselens.cli.commands as pkg

    found = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found[module.NAME] = module
    return found


def make_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    from sparselens import __version__

    parser = argparse.ArgumentParser(
        prog="sparselens",
        description="Sparse dictionaries for opening neural networks up: harvest activations, "
                    "train SAEs and their relatives, evaluate, interpret, steer.")
    parser.add_argument("--version", action="version", version=f"sparselens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = _commands()
    for name, module in commands.items():
        cmd = sub.add_parser(name, help=module.HELP,  # type: ignore[attr-defined]
                             description=module.HELP)  # type: ignore[attr-defined]
        add_options(cmd, module.Config)  # type: ignore[attr-defined]
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = make_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = commands[args.command]
    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        config = build_config(module.Config, values)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        parser.exit(2, f"sparselens {args.command}: invalid options: {err}\n")
    try:
        result = module.run(config)  # type: ignore[attr-defined]
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"sparselens {args.command}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
