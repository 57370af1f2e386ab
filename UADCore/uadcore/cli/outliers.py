"""`uad outliers RUN`: the training scans that outlier removal flagged, with why
and when; optionally the curated manifest of the kept scans."""

from __future__ import annotations

import os

from uadcore.cli.output import print_json, print_table, say


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "outliers",
        help="the training scans that outlier removal flagged",
        description="List the scans removed during training (from RUN/outliers.csv) with epoch, loss and threshold.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="a run folder")
    parser.add_argument("--export-kept", metavar="MANIFEST",
                        help="write every scan not removed (validation scans included) as a manifest for a new run")
    parser.add_argument("--force", action="store_true", help="replace an existing --export-kept file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.io import write_manifest
    from uadcore.io.checkpoint import load_run
    from uadcore.train.outliers import curated_entries

    state = load_run(args.run_dir)
    rows = state["audit"]
    kept = curated_entries(state)
    if args.export_kept:
        from uadcore.io.outputs import check_output, data_folders

        manifest = state["config"].get("data")
        check_output(args.export_kept, [manifest, *(e.path for e in kept)], data_folders(kept), force=args.force,
                     kind="manifest")
        write_manifest(kept, args.export_kept)
    payload = {"run": os.path.abspath(args.run_dir), "epoch": state["epoch"], "gamma": state["config"]["gamma"],
               "training_scans": len(state["train_entries"]), "kept": int(state["kept"].sum()),
               "validation_scans": len(state["validation"]["entries"]), "removed": rows}
    if args.export_kept:
        payload["kept_manifest"] = os.path.abspath(args.export_kept)
    if args.json:
        print_json(payload)
        return 0
    removed = [row for row in rows if row["epoch"]]
    excluded = [row for row in rows if not row["epoch"]]
    if removed:
        print_table(removed, ["path", "epoch", "loss", "threshold", "loss_over_mean", "label", "score"])
    say(f"{len(removed)} of {len(state['train_entries'])} training scans removed by epoch {state['epoch']} (gamma {payload['gamma']})")
    if excluded:
        print_table(excluded, ["path", "label", "reason"])
        say(f"{len(excluded)} scans left out before training: they could not be prepared")
    if args.export_kept:
        say(f"{len(kept)} scans (kept and validation) written to {payload['kept_manifest']}")
    return 0
