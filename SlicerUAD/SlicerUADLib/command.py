"""`uad gui`: the Slicer panels in a PyQt5 window (needs the gui extra: PyQt5 and
slicer-core).

A command of the `uad` CLI that the engine does not know: setup.py names
`add_parser` in the ``uad.commands`` entry-point group, which `uadcore.cli` reads.
Nothing here imports Qt until the command runs.
"""

from __future__ import annotations


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "gui",
        help="the UAD panels in a window outside 3D Slicer",
        description="Train, review outliers, overlay anomaly maps and evaluate in a window with three slice views.",
    )
    parser.add_argument("--scan", metavar="SCAN", help="a scan to load at start")
    parser.add_argument("--run", metavar="RUN", help="a run folder, or pretrained:NAME, to open in the panels (with --scan: "
                        "its map is shown)")
    parser.add_argument("--mask", metavar="MASK", help="with --scan and --run: its lesion mask, drawn as an outline over the map")
    parser.add_argument("--screenshots", metavar="DIR", help="write a PNG of each panel into DIR and exit")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.errors import UADError

    if args.scan:
        from uadcore.io import read_scan

        read_scan(args.scan)  # an unreadable scan is exit 2 here, before any window opens

    try:
        from SlicerUADLib.gui import run_gui
    except ImportError as error:
        raise UADError(f"uad gui needs PyQt5 and slicer-core: pip install 'uadcore[gui]' ({error})") from error
    return run_gui(args.scan, args.run, args.screenshots, args.mask)
