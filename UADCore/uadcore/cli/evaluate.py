"""`uad evaluate RUN --data MANIFEST`: detection and segmentation metrics of a
trained run on labelled scans it did not train on."""

from __future__ import annotations

from uadcore.cli.output import print_json, print_table, say


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="AUROC, AP and Dice of a trained run on a labelled manifest",
        description=(
            "Sample AUROC/AP from the labels; where masks exist, voxel AUROC/AP inside the brain, Dice at "
            "the threshold best on 1/5 of the scans (reported on the other 4/5) and the best Dice."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    parser.add_argument("--data", required=True, metavar="MANIFEST", help="manifest CSV (path,label,mask) of test scans")
    parser.add_argument("--map", default="rec", metavar="KIND", help="map kind: rec; for VAEs also kl-grad, rec-grad, elbo-grad, combi (default rec)")
    parser.add_argument("--reference", action="store_true", help="the published code's batch-dependent choices (VAE maps)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=None, metavar="W", help="processes preparing scans")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.evaluate import evaluate
    from uadcore.io import load_dataset
    from uadcore.score.scorer import Scorer

    scorer = Scorer(args.run_dir, device=args.device, reference=args.reference)
    entries = load_dataset(args.data)
    _refuse_training_scans(scorer, entries, args.data)
    report = evaluate(scorer, entries, kind=args.map, workers=args.workers, progress=not args.json)
    if args.json:
        print_json(report)
        return 0
    keys = ["n", "healthy", "unhealthy", "sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "dice", "best_dice"]
    print_table([{key: _fmt(report.get(key)) for key in keys}], keys)
    say(f"map {report['map']}; scores per scan with --json")
    return 0


def _refuse_training_scans(scorer, entries, data) -> None:
    """Accuracy is measured on scans the model did not train on."""
    import os

    from uadcore.errors import UADError
    from uadcore.train.checkpoint import CHECKPOINT_NAME, load_checkpoint

    trained_on = {e["path"] for e in load_checkpoint(os.path.join(scorer.run_dir, CHECKPOINT_NAME))["train_entries"]}
    overlap = [e.path for e in entries if e.path in trained_on]
    if overlap:
        raise UADError(f"{data}: {len(overlap)} scan(s) were used to train this run (first: {overlap[0]}); evaluate on unseen scans")


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else value)
