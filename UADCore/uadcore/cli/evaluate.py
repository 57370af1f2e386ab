"""`uad evaluate RUN --data MANIFEST`: detection and segmentation metrics of a
trained run on labelled scans it did not train on."""

from __future__ import annotations

from uadcore.cli.lazy import Later
from uadcore.cli.output import print_json, print_table, say
from uadcore.cli.score import add_map_options, map_help

HELP = "AUROC, AP and Dice of a trained run on a labelled manifest"


def add_parser(commands) -> None:
    from uadcore.device import DEVICES

    parser = commands.add_parser(
        "evaluate",
        help=HELP,
        description=(
            "Sample AUROC/AP from the labels; where masks exist, voxel AUROC/AP inside the brain, Dice at "
            "the threshold best on 1/5 of the scans (reported on the other 4/5) and the best Dice."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder, or pretrained:NAME (a model shipped with UAD; uad models)")
    parser.add_argument("--data", required=True, metavar="MANIFEST", help="manifest CSV (path,label,mask) of test scans")
    parser.add_argument("--map", metavar="KIND", help=Later(lambda: map_help() + "; 'all' compares every kind"))
    parser.add_argument("--plot", metavar="PNG", help="ROC curves of the sample scores (default with --map all: RUN/roc.png)")
    parser.add_argument("--force", action="store_true", help="replace an existing --plot file")
    add_map_options(parser)
    parser.add_argument("--postprocess", action="store_true", help="median filter 5^3, brain mask eroded by 1 voxel, components <= 7 voxels removed for Dice")
    parser.add_argument("--unit-overlap", type=float, default=0.0, metavar="F",
                        help="slice and patch models: an input is positive when lesion covers more than F of it (default 0: any lesion voxel)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--workers", type=int, default=None, metavar="W", help="processes preparing scans")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import os

    from uadcore.errors import UADError
    from uadcore.evaluate.run import evaluate
    from uadcore.io import load_dataset
    from uadcore.score.scorer import Scorer

    entries = load_dataset(args.data)
    if args.plot:  # refused before any work: over an input, then not a picture
        from uadcore.io.outputs import check_output, data_folders

        check_output(args.plot, [args.data, *(e.path for e in entries), *(e.mask for e in entries if e.mask)],
                     data_folders(entries), force=args.force, kind="picture")
        if not args.plot.lower().endswith(".png"):
            raise UADError(f"--plot {args.plot}: the ROC plot is a PNG picture; give a name ending in .png")
    scorer = Scorer(args.run_dir, device=args.device, reference=args.reference, raw=args.raw, statistic=args.score)
    _refuse_unlabelled(entries, args.data)
    _refuse_training_scans(scorer, entries, args.data)
    args.map = args.map or scorer.kinds[0]
    kinds = scorer.kinds if args.map == "all" else [args.map]
    for kind in kinds:
        scorer.check_kind(kind)
    reports = {kind: evaluate(scorer, entries, kind=kind, workers=args.workers, progress=not args.json, postprocess=args.postprocess,
                            unit_overlap=args.unit_overlap)
               for kind in kinds}
    from uadcore.pretrained import is_pretrained

    # by default beside a run's own files; never into the package that holds a pretrained model
    plot = args.plot or (os.path.join(scorer.run_dir, "roc.png") if args.map == "all" and not is_pretrained(args.run_dir) else None)
    if plot:
        from uadcore.report import roc_png

        curves = {kind: ([s["label"] == "unhealthy" for s in r.scans if s["label"]], [s["score"] for s in r.scans if s["label"]])
                  for kind, r in reports.items()}
        plot = roc_png(curves, os.path.abspath(plot), title=os.path.basename(scorer.run_dir))
    for skipped in next(iter(reports.values())).skipped:
        say(f"left out: {skipped['reason']}")
    if args.json:
        payload = reports[args.map].to_dict() if args.map != "all" else {"maps": {k: r.to_dict() for k, r in reports.items()}}
        print_json({**payload, "roc_plot": plot} if plot else payload)
        return 0
    keys = ["map", "calibrated", "sample_score", "n", "healthy", "unhealthy", "sample_auroc", "sample_ap"]
    if scorer.preset.unit:
        keys += [f"{scorer.preset.unit}_auroc", f"{scorer.preset.unit}_ap"]
    keys += ["voxel_auroc", "voxel_ap", "dice", "best_dice", "peak_in_lesion"]
    print_table([{key: _fmt(report.metric(key)) for key in keys} for report in reports.values()], keys)
    for kind, report in reports.items():
        if report.voxel is not None and report.voxel.dice_missing:
            say(f"{kind}: no Dice: {report.voxel.dice_missing}")
        alone = report.metric("lesion_scans_only")
        if alone:
            say(f"{kind}, over the {alone['scans']} lesion scans alone: voxel AUROC {_fmt(alone['voxel_auroc'])}, "
                f"voxel AP {_fmt(alone['voxel_ap'])}, best Dice {_fmt(alone['best_dice'])}")
    say("scores per scan with --json" + (f"; ROC curves in {plot}" if plot else ""))
    return 0


def _refuse_unlabelled(entries, data) -> None:
    """Accuracy needs the truth: labels for the sample metrics, masks for the voxel ones."""
    from uadcore.errors import UADError

    if not any(e.label or e.mask for e in entries):
        raise UADError(f"{data}: none of its {len(entries)} scan(s) has a label or a lesion mask; evaluation needs them: "
                       "give a manifest with a label column (healthy, unhealthy) and, for voxel metrics, a mask column")


def _refuse_training_scans(scorer, entries, data) -> None:
    """Accuracy is measured on scans the model did not train on."""
    from uadcore.errors import UADError

    overlap = [e.path for e in entries if e.path in scorer.trained_on]
    if overlap:
        raise UADError(f"{data}: {len(overlap)} scan(s) were used to train this run (first: {overlap[0]}); evaluate on unseen scans")


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else value)
