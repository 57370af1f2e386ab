"""The `uad` command (also `python -m uadcore`).

Exit codes: 0 success; 2 bad input (one line on stderr naming the file and the
problem, also for a file or folder the system refuses: no permission, no space);
1 anything else (an internal error).
With --json a command prints exactly one JSON object on stdout; progress and
messages go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

from uadcore import __version__
from uadcore.cli.lazy import HelpFormatter
from uadcore.errors import UADError

COMMANDS = ("synth", "check", "prepare", "train", "score", "evaluate", "outliers", "audit", "experiment", "demo", "models")
COMMANDS_GROUP = "uad.commands"  # entry points: add_parser(commands) of a command another package adds


def build_parser(in_full=COMMANDS) -> argparse.ArgumentParser:
    """The parser of `uad`. Each command is a module of this package with a one-line
    ``HELP`` and ``add_parser(commands)``; the commands named ``in_full`` get their
    full parsers, whose choices and defaults may come from the model registry
    (torch); the others only their line. `main` builds only the command it runs, so
    `uad --help`, `--version` and a mistyped command answer without importing
    torch, MONAI or SimpleITK."""
    parser = argparse.ArgumentParser(
        prog="uad",
        description="Unsupervised anomaly detection for brain MRI and other medical images.",
    )
    parser.add_argument("--version", action="version", version=f"uad {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an internal error and the libraries' own warnings")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"uadcore.cli.{name}")
        if name in in_full:
            module.add_parser(commands)
            commands.choices[name].formatter_class = HelpFormatter  # its help texts made when printed (cli.lazy)
        else:
            commands.add_parser(name, help=module.HELP)
    for command in entry_points(group=COMMANDS_GROUP):  # commands of other packages: `uad gui` of SlicerUADLib
        command.load()(commands)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(in_full={_command_in(argv)}).parse_args(argv)
    from uadcore.libraries import quiet_libraries
    from uadcore.malloc import keep_freed_memory

    keep_freed_memory()  # every command makes and drops arrays of a few MB (see uadcore.malloc)
    quiet_libraries(args.debug, prefix=f"uad {args.command}")
    try:
        return args.handler(args) or 0
    except UADError as error:
        print(f"uad {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"uad {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input: say so in one line unless --debug
        if isinstance(error, OSError) and error.filename is not None:
            # a folder that cannot be written, a file that vanished: the user's to fix
            print(f"uad {args.command}: error: {error.filename}: {error.strerror or error}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        print(
            f"uad {args.command}: internal error: {type(error).__name__}: {error} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
