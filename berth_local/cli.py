"""`berth`: the command-line tool for users and operators (runs on their machine, not in Lambda).

Each subcommand lives in its own module and registers itself in COMMANDS with `command()`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, List, Optional

# name -> (help, function that adds arguments to its parser, function that runs it)
COMMANDS: Dict[str, tuple] = {}
_SUBCOMMAND_MODULES = ["berth_local.admin", "berth_local.proxy", "berth_local.gc_cli",
                       "berth_local.mirror_cli"]


class CliError(Exception):
    """A failure to report to the user as one readable line (exit status 1), never a traceback."""


def command(name: str, help_text: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help_text, add_arguments, run)
        return run
    return register


def _load_commands() -> None:
    import importlib
    for module in _SUBCOMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="berth", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in sorted(COMMANDS.items()):
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except CliError as error:
        print(f"berth: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # `python -m berth_local.cli` runs this file as __main__, a second copy of the module; the
    # subcommands register into the importable one, so run that one's main.
    from berth_local.cli import main as _main
    sys.exit(_main())
