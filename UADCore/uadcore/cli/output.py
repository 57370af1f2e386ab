"""How commands talk: one JSON object on stdout for --json, tables for people."""

from __future__ import annotations

import sys


def print_json(payload: dict) -> None:
    """The one JSON object a --json command prints on stdout."""
    from uadcore.io.strict_json import strict_json  # uadcore.io reads scans (nibabel): not for `uad --help`

    sys.stdout.write(strict_json(payload) + "\n")
    sys.stdout.flush()


def print_table(rows: list[dict], columns: list[str], out=None) -> None:
    """A plain aligned text table of ``rows`` (dicts) in ``columns`` order."""
    out = out or sys.stdout
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip(), file=out)
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=out)


def say(message: str) -> None:
    """A message for the person at the terminal (stderr, so stdout stays clean)."""
    print(message, file=sys.stderr)
