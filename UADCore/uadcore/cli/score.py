"""`uad score RUN SCAN --map KIND --out MAP.nii.gz`: one scan's anomaly map, in the
scan's own geometry, and its sample score; `uad score RUN SCAN... --out FOLDER`:
many scans (files, DICOM folders, folders of scans, manifests), prepared by worker
processes while the model scores the ones ready, each map written as it comes and
every score in FOLDER/scores.csv."""

from __future__ import annotations

import contextlib
import csv
import os
import sys

from uadcore.cli.lazy import Later
from uadcore.cli.output import print_json, say

HELP = "write the anomaly maps of scans and print their scores"


def map_help() -> str:
    """The map kinds of every model, from the model registry."""
    from uadcore.models import MODELS

    return "map kind (default: the model's first): " + "; ".join(f"{name} {', '.join(spec.maps)}" for name, spec in MODELS.items())


def add_map_options(parser) -> None:
    """The options of how a map and its sample score are made (score, evaluate)."""
    from uadcore.score.calibrate import STATISTICS

    parser.add_argument("--raw", action="store_true",
                        help="the raw map, not calibrated on the run's healthy validation scans")
    parser.add_argument("--score", choices=STATISTICS, metavar="STAT",
                        help="sample score read from the map: mean, top1 (mean of its top 1 %%) or share (of brain voxels "
                             "above the healthy 1 %% threshold); default: the one the run chose on pseudo-lesions")
    parser.add_argument("--reference", action="store_true", help="the published code's batch-dependent choices (VAE maps; raw)")


SCORES_NAME = "scores.csv"
SCORE_COLUMNS = ("path", "map_file", "score", "sample_score", "calibrated", "percentile_vs_healthy", "problem")


def add_parser(commands) -> None:
    from uadcore.device import DEVICES

    parser = commands.add_parser(
        "score",
        help=HELP,
        description="Score scans with a trained run; write each anomaly map on its scan's own grid as NIfTI. One scan: "
                    "--out names its map. Several (or a folder of scans, or a manifest .csv): --out names a folder that "
                    f"gets one map per scan and {SCORES_NAME}; worker processes prepare the next scans while the model "
                    "scores the ones ready.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder, or pretrained:NAME (a model shipped with UAD, "
                        "trained on healthy IXI T1 scans: a first map without training; uad models)")
    parser.add_argument("scans", nargs="+", metavar="SCAN",
                        help="a scan file or DICOM folder; several, a folder of scans or a manifest .csv score each scan")
    parser.add_argument("--map", metavar="KIND", help=Later(map_help))
    parser.add_argument("--out", metavar="MAP.nii.gz|FOLDER",
                        help="one scan: where to write its map (NIfTI); several: a folder (made if missing) for their "
                             f"maps and {SCORES_NAME}, never beside the scans; no file in it is replaced without --force")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    add_map_options(parser)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--workers", type=int, metavar="W", help="processes preparing scans (default: one per core)")
    parser.add_argument("--json", action="store_true", help='print {"score": ..., "percentile_vs_healthy": ...}; for several '
                        'scans {"scans": [one such object a scan]}')
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.io import load_dataset
    from uadcore.io.outputs import map_names
    from uadcore.score.scorer import Scorer

    scorer = Scorer(args.run_dir, device=args.device, reference=args.reference, raw=args.raw, statistic=args.score)
    entries = [entry for source in args.scans for entry in load_dataset(source)]
    # one scan file or DICOM series named alone: its map is --out; anything else (several,
    # a folder of scans, a manifest) fills the folder --out
    one = len(args.scans) == 1 and [e.path for e in entries] == [os.path.abspath(args.scans[0])]
    names = None if one else map_names([e.path for e in entries])
    check_outputs(args, entries, names)
    args.map = args.map or scorer.kinds[0]
    if one:
        return score_one(args, scorer, entries[0].path)
    return score_many(args, scorer, entries, names)


def check_outputs(args, entries, names: list[str] | None) -> None:
    """Refuse, before any work, outputs that would land on or beside an input, or
    replace a file without --force: the one map (``names`` None), or every map of
    ``names`` and scores.csv in the folder --out."""
    from uadcore.errors import UADError
    from uadcore.io.outputs import check_output, data_folders

    if not args.out:
        return
    inputs, folders = [e.path for e in entries], data_folders(entries)
    if names is None:
        if not args.out.lower().endswith((".nii", ".nii.gz")):
            raise UADError(f"{args.out}: the map is written as NIfTI; name it .nii.gz or .nii")
        check_output(args.out, inputs, folders, force=args.force, kind="map")
        return
    if os.path.isfile(args.out) or args.out.lower().endswith((".nii", ".nii.gz")):
        raise UADError(f"{args.out}: names a file; for {len(entries)} scans --out names a folder for their maps")
    for name in [SCORES_NAME, *names]:
        check_output(os.path.join(args.out, name), inputs, folders, force=args.force,
                     kind="scores" if name == SCORES_NAME else "map")


def payload_of(scorer, result, kind: str) -> dict:
    return {"scan": os.path.abspath(result.path), "map": kind, "calibrated": result.calibrated,
            "sample_score": result.statistic, "score": result.score,
            "percentile_vs_healthy": scorer.percentile(result.score, kind),
            "healthy_reference_scans": scorer.reference_scans(kind),
            "thresholds_at_fpr": scorer.thresholds.get(kind, {}), "sample_scores": result.sample_scores}


def score_one(args, scorer, scan: str) -> int:
    from uadcore.io import write_nifti
    from uadcore.io.outputs import ANOMALY_MAP

    result = scorer.score(scan, kind=args.map)
    payload = payload_of(scorer, result, args.map)
    if args.out:
        payload["out"] = write_nifti(result.scan_map(), result.prepared.scan_grid, os.path.abspath(args.out),
                                     f"{ANOMALY_MAP} ({args.map})")
    if args.json:
        print_json(payload)
    else:
        print(score_line(payload))
        if args.out:
            say(f"map written to {payload['out']}")
    return 0


def score_line(payload: dict) -> str:
    from uadcore.score.words import score_words

    return score_words(payload["score"], payload["sample_score"], payload["map"], payload["calibrated"],
                       payload["percentile_vs_healthy"], payload["healthy_reference_scans"])


def score_many(args, scorer, entries, names: list[str]) -> int:
    """Every scan scored as the workers prepare them; each map written as it comes,
    and its row of scores.csv with it (a stopped run keeps what it did). A scan that
    cannot be read or prepared is reported, and its row says why; the exit status
    is then 2."""
    from uadcore.io.atomic import write_error

    folder = os.path.abspath(args.out) if args.out else None
    table = None
    if folder:
        os.makedirs(folder, exist_ok=True)
        table = open(os.path.join(folder, SCORES_NAME), "w", newline="", encoding="utf-8")
        writer = csv.DictWriter(table, fieldnames=SCORE_COLUMNS)
        writer.writeheader()
    rows, payloads = [], []
    with table or contextlib.nullcontext():
        for name, (entry, result, _) in zip(names, scorer.score_many(entries, args.map, args.workers, progress=not args.json)):
            row, payload = score_and_write(args, scorer, folder, name, entry.path, result)
            rows.append(row)
            payloads += [payload] if payload else []
            if table:
                try:
                    writer.writerow({key: rows[-1].get(key, "") for key in SCORE_COLUMNS})
                    table.flush()
                except OSError as error:  # a full disk
                    raise write_error(table.name, error) from error
    problems = [r for r in rows if "problem" in r]
    if args.json:
        print_json({"map": args.map, "scans": payloads, "problems": problems})
    elif folder:
        say(f"{len(payloads)} maps and {SCORES_NAME} written to {folder}")
    return 2 if problems else 0


def score_and_write(args, scorer, folder: str | None, name: str, path: str, result) -> tuple[dict, dict | None]:
    """One scan's (row of scores.csv, payload), its map written into ``folder`` as
    ``name``; a problem (a string) said on stderr, with no payload."""
    from uadcore.io import write_nifti
    from uadcore.io.outputs import ANOMALY_MAP

    row = {"path": os.path.abspath(path)}
    if isinstance(result, str):
        print(f"uad score: error: {result}", file=sys.stderr, flush=True)
        return {**row, "problem": result}, None
    payload = payload_of(scorer, result, args.map)
    if folder:
        payload["out"] = write_nifti(result.scan_map(), result.prepared.scan_grid, os.path.join(folder, name),
                                     f"{ANOMALY_MAP} ({args.map})")
        row["map_file"] = name
    if not args.json:
        print(f"{path}: {score_line(payload)}", flush=True)
    return {**row, **{key: payload[key] for key in ("score", "sample_score", "calibrated", "percentile_vs_healthy")}}, payload
