"""`uad score RUN SCAN --map KIND --out MAP.nii.gz`: one scan's anomaly map, in the
scan's own geometry, and its sample score."""

from __future__ import annotations

import os

from uadcore.cli.output import print_json, say
from uadcore.device import DEVICES


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


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "score",
        help="write the anomaly map of one scan and print its score",
        description="Score one scan with a trained run; write its anomaly map on the scan's own grid as NIfTI.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    parser.add_argument("scan", metavar="SCAN", help="a scan file or DICOM folder")
    parser.add_argument("--map", metavar="KIND", help=map_help())
    parser.add_argument("--out", metavar="MAP.nii.gz", help="where to write the map (NIfTI; never beside the scan)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_map_options(parser)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--json", action="store_true", help='print {"score": ..., "percentile_vs_healthy": ...}')
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.errors import UADError
    from uadcore.io import write_nifti
    from uadcore.score.scorer import Scorer

    if args.out and not args.out.lower().endswith((".nii", ".nii.gz")):
        raise UADError(f"{args.out}: the map is written as NIfTI; name it .nii.gz or .nii")
    if args.out:
        from uadcore.io import ScanEntry
        from uadcore.io.outputs import check_output, data_folders

        check_output(args.out, [args.scan], data_folders([ScanEntry(args.scan)]), force=args.force)
    scorer = Scorer(args.run_dir, device=args.device, reference=args.reference, raw=args.raw, statistic=args.score)
    args.map = args.map or scorer.kinds[0]
    result = scorer.score(args.scan, kind=args.map)
    payload = {"scan": os.path.abspath(args.scan), "map": args.map, "calibrated": result.calibrated,
               "sample_score": result.statistic, "score": result.score,
               "percentile_vs_healthy": scorer.percentile(result.score, args.map),
               "healthy_reference_scans": len(scorer.validation_scores.get(args.map, [])),
               "thresholds_at_fpr": scorer.thresholds.get(args.map, {}), "sample_scores": result.sample_scores}
    if args.out:
        payload["out"] = write_nifti(result.scan_map(), result.prepared.scan_grid, os.path.abspath(args.out))
    if args.json:
        print_json(payload)
    else:
        percentile = payload["percentile_vs_healthy"]
        n = payload["healthy_reference_scans"]
        rank = f", above {percentile:.0f} % of the {n} healthy validation scans" if percentile is not None else ""
        map_name = f"{'calibrated ' if result.calibrated else ''}{args.map} map"
        print(f"score {result.score:.5f} ({result.statistic} of the {map_name}){rank}")
        if args.out:
            say(f"map written to {payload['out']}")
    return 0
