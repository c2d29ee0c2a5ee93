"""Command line: ``workbench <command> ...``.

Subcommands live in their own modules, each with ``register(subparsers)``. Packages built on the
workbench (reft, probes) add theirs through COMMAND_MODULES, imported only when present, so the
core never depends on them.

>>> build_parser().parse_args(["patch", "--base", "a", "--source", "b", "--target", "x",
...                            "--foil", "y"]).grid
'position'
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "workbench.commands.patch",
    "workbench.commands.das",
    "probes.commands",  # workbench ravel
    "probes.sentiment_commands",  # workbench sentiment, workbench neuron
    "reft.commands",  # workbench reft train|generate
    "reft.memorize_commands",  # workbench memorize, workbench memorize-sweep
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Causal interventions on language models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a missing dependency inside the module is a real error
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, IndexError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
