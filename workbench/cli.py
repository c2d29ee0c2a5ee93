"""Command line: ``workbench <command> ...``.

Subcommands live in their own modules, each with ``register(subparsers)``. The core's own ones
are `CORE_COMMANDS`; packages built on the workbench add theirs as entry points in the group
``workbench.commands`` (pyproject ``[project.entry-points."workbench.commands"]``), so the core
names no client package.

>>> build_parser().parse_args(["patch", "--base", "a", "--source", "b", "--target", "x",
...                            "--foil", "y"]).grid
'position'
>>> "workbench.commands.data" in command_modules()
True
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "workbench.commands"
CORE_COMMANDS = ("workbench.commands.patch", "workbench.commands.das", "workbench.commands.data")


def command_modules() -> tuple[str, ...]:
    """The core's command modules, then every module registered in ``workbench.commands``."""
    names = list(CORE_COMMANDS)
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        module = point.value.split(":")[0].strip()
        if module not in names:
            names.append(module)
    return tuple(names)


def build_parser(modules: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Causal interventions on language models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in command_modules() if modules is None else modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a missing dependency inside the module is a real error
                raise
            continue  # a registered package that is no longer installed
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyError as error:  # e.g. an attribute the data lacks; its message names the options
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except (ValueError, IndexError, FileNotFoundError, ConnectionError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
