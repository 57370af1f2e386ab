"""`uad demo`: the whole pipeline on a small synthetic cohort, on a laptop CPU.

This release runs the stages that exist: synthesise a cohort, validate and
preprocess it, and write one preprocessed subject with its lesion mask on the model
grid (open both in 3D Slicer). Training, scoring and evaluation join as they land.
"""

from __future__ import annotations

import os
import shutil

from uadcore.cli.output import print_json, say
from uadcore.errors import UADError

MARKER = ".uad-demo"  # a folder holding this file was written by `uad demo` and may be replaced by it


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the pipeline on a small synthetic cohort (minutes on a laptop CPU)",
        description="Synthesise a small cohort and run every available stage of UAD on it.",
    )
    parser.add_argument("--out", default="uad-demo", metavar="DIR", help="output folder (default ./uad-demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.io import read_manifest, read_mask, read_scan, write_nifti
    from uadcore.preprocess import make_preset
    from uadcore.synth import synthesize_cohort

    out = os.path.abspath(args.out)
    _claim_folder(out)
    say(f"[1/3] synthesising a cohort into {out}/cohort")
    manifest = synthesize_cohort(os.path.join(out, "cohort"), healthy=12, unhealthy=4, seed=args.seed, progress=not args.json)

    say("[2/3] reading, checking and preprocessing every scan (brain3d-behrendt)")
    preset = make_preset("brain3d-behrendt")
    entries = read_manifest(manifest)
    prepared = {}
    for entry in entries:
        scan = read_scan(entry.path, need_3d=True)
        mask = read_mask(entry.mask, scan) if entry.mask else None
        prepared[entry.path] = (preset.prepare(scan), mask, scan)

    say("[3/3] writing one unhealthy subject and its mask on the model grid")
    example = next(entry for entry in entries if entry.label == "unhealthy")
    on_model, mask, scan = prepared[example.path]
    name = os.path.basename(example.path).split(".")[0]
    preview = os.path.join(out, "preprocessed")
    image_path = write_nifti(on_model.image, on_model.grid, os.path.join(preview, f"{name}_{preset.name}.nii.gz"))
    mask_on_model = preset_mask(on_model, mask, scan)
    mask_path = write_nifti(mask_on_model, on_model.grid, os.path.join(preview, f"{name}_mask_{preset.name}.nii.gz"))

    result = {
        "out": out,
        "manifest": manifest,
        "scans": len(entries),
        "model_grid": on_model.grid.describe(),
        "preprocessed": image_path,
        "mask": mask_path,
        "not_yet": ["train", "score", "evaluate"],
    }
    if args.json:
        print_json(result)
    else:
        say(f"cohort: {manifest} ({len(entries)} scans)")
        say(f"model grid: {result['model_grid']}")
        say(f"preprocessed subject: {image_path}")
        say(f"its lesion mask:      {mask_path}")
        say("training, scoring and evaluation join the demo as those commands land")
    return 0


def preset_mask(prepared, mask, scan):
    """A scan-grid mask on the model grid (nearest neighbour keeps it binary)."""
    from uadcore.preprocess import resample

    return (resample(mask.astype("float32"), scan.grid, prepared.grid, order=0) > 0).astype("uint8")


def _claim_folder(out: str) -> None:
    """Use ``out`` if it is new, empty, or an earlier demo's output; never anything else."""
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, MARKER)):
            raise UADError(f"{out}: exists and was not written by `uad demo`; choose another --out")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, MARKER), "w").close()
