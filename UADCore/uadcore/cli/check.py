"""`uad check DATA`: read every scan (and mask) of a folder or manifest and prepare
it with a preset, so problems show before a long training run does."""

from __future__ import annotations

import os

from uadcore.cli.output import print_json, print_table, say
from uadcore.progress import progress_bar

HELP = "validate a folder or manifest of scans: read, check masks, preprocess"


def add_parser(commands) -> None:
    from uadcore.preprocess import PRESETS

    parser = commands.add_parser(
        "check",
        help=HELP,
        description=(
            "Read every scan of a folder (searched recursively) or manifest CSV, check its values "
            "and its mask's geometry, and prepare it with a preprocessing preset. Stops at the "
            "first bad file with exit code 2 and a line naming it. Writes nothing."
        ),
    )
    parser.add_argument("data", metavar="DIR|MANIFEST", help="folder of scans or manifest CSV (path,label,mask)")
    parser.add_argument("--preset", default="brain3d-behrendt", choices=sorted(PRESETS), help="preprocessing preset (default brain3d-behrendt)")
    parser.add_argument("--skull-strip", choices=["auto", "yes", "no"], help="brain presets: deepbet skull stripping (default auto)")
    parser.add_argument("--registration", choices=["affine", "deformable"], help="brain presets: as uad train --registration")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.errors import warn
    from uadcore.io import load_dataset, read_mask, read_scan
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    options = {"skull_strip": args.skull_strip, "registration": args.registration}
    preset = make_preset(args.preset, **{name: value for name, value in options.items() if value})
    entries = load_dataset(args.data)
    rows = []
    with progress_bar(total=len(entries), desc="check", unit="scan", enabled=not args.json) as bar:
        for entry in entries:
            scan = read_scan(entry.path, need_3d=preset.needs_3d)
            rows.append({"path": entry.path, "label": entry.label or "", "grid": scan.grid.describe(),
                         "mask_voxels": int(read_mask(entry.mask, scan).sum()) if entry.mask else None})
            if entry.label == "unhealthy" and rows[-1]["mask_voxels"] == 0:
                warn(f"{entry.mask}: the lesion mask of the unhealthy scan {entry.path} is empty; its voxels count as healthy")
            if entry.brain:
                read_mask(entry.brain, scan)  # on the scan's grid, or a clear error
            bar.update()
    # the preparation itself (skull stripping, registration, ...): in parallel, and
    # remembered in the cache for the training run that follows
    for row, (prepared, _) in zip(rows, prepare_scans(entries, preset, progress=not args.json)):
        quality = prepared.quality
        row.update({"model_inputs": len(prepared.inputs()), "brain_ml": quality.get("brain_ml"),
                    "brain_from": quality.get("skull_stripped_by"), "registration": quality.get("registration_correlation")})
    counts = {label: sum(row["label"] == label for row in rows) for label in ("healthy", "unhealthy", "")}
    summary = {
        "n": len(rows),
        "healthy": counts["healthy"],
        "unhealthy": counts["unhealthy"],
        "unknown": counts[""],
        "with_mask": sum(row["mask_voxels"] is not None for row in rows),
        "preset": preset.to_dict(),
        "scans": rows,
    }
    if args.json:
        print_json(summary)
        return 0
    base = os.path.commonpath([row["path"] for row in rows]) if len(rows) > 1 else os.path.dirname(rows[0]["path"])
    table = [{**{k: ("-" if v is None else v) for k, v in row.items()}, "path": os.path.relpath(row["path"], base)} for row in rows]
    columns = ["path", "label", "grid", "mask_voxels", "model_inputs"]
    print_table(table, columns + (["brain_ml", "brain_from", "registration"] if preset.prepares_brain else []))
    say(
        f"{summary['n']} scans OK under {base} ({summary['healthy']} healthy, {summary['unhealthy']} unhealthy, "
        f"{summary['unknown']} unlabelled, {summary['with_mask']} with masks), prepared with {preset.name}"
    )
    return 0
