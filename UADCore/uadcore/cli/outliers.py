"""`uad outliers RUN`: the training scans that outlier removal flagged, with why
and when, and the run's out-of-fold audit ranking of every training scan where it
has one; optionally the curated manifest of the kept scans. Given the folder of a
`uad audit`, its ranking."""

from __future__ import annotations

import os

from uadcore.cli.output import print_json, print_table, say

HELP = "the training scans that outlier removal flagged, and the audit's ranking"

RANKING_COLUMNS = ["rank", "path", "label", "score", "percentile_in_set", "peak_ras_mm", "region_ml"]


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "outliers",
        help=HELP,
        description="List the scans removed during training (from RUN/outliers.csv) with epoch, score and threshold, "
                    "and, for a run that removed by the out-of-fold audit (--removal-score audit), its ranking of every "
                    "training scan (RUN/audit.csv). Given the folder of a `uad audit`, list its ranking.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="a run folder, or the folder of a uad audit")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="scans of the audit's ranking listed (default 10)")
    parser.add_argument("--export-kept", metavar="MANIFEST",
                        help="write every scan not removed (validation scans included) as a manifest for a new run")
    parser.add_argument("--force", action="store_true", help="replace an existing --export-kept file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.score.out_of_fold import read_audit_csv
    from uadcore.errors import UADError
    from uadcore.io.run_files import RunFiles

    files = RunFiles(os.path.abspath(args.run_dir))
    ranking = read_audit_csv(files.audit) if os.path.isfile(files.audit) else None
    if not os.path.isfile(files.checkpoint) and ranking is not None:  # the folder of a `uad audit`
        if args.export_kept:
            raise UADError(f"{args.run_dir}: an audit removes nothing; choose the scans to keep in the Outlier review "
                           "panel, or train with --removal-score audit")
        return _show_ranking(files, ranking, args)
    return _show_run(files, ranking, args)


def _show_ranking(files, ranking: list[dict], args) -> int:
    if args.json:
        print_json({"audit": files.audit, "scans": len(ranking), "ranking": ranking})
        return 0
    _print_ranking(ranking, args.top)
    say(f"{len(ranking)} scans ranked by the out-of-fold audit: {files.audit}")
    return 0


def _print_ranking(ranking: list[dict], top: int) -> None:
    shown = [{**r, "score": round(r["score"], 4), "peak_ras_mm": " ".join(map(str, r["peak_ras_mm"] or []))}
             for r in ranking[:top] if r["rank"] is not None]
    print_table(shown, [c for c in RANKING_COLUMNS if any(str(r.get(c, "")) for r in shown)])


def _show_run(files, ranking: list[dict] | None, args) -> int:
    from uadcore.io import write_manifest
    from uadcore.io.checkpoint import load_run
    from uadcore.train.outliers import curated_entries, was_removed

    state = load_run(files.folder)
    rows = state["audit"]
    kept = curated_entries(state)
    if args.export_kept:
        from uadcore.io.outputs import check_output, data_folders

        manifest = state["config"].get("data")
        check_output(args.export_kept, [manifest, *(e.path for e in kept)], data_folders(kept), force=args.force,
                     kind="manifest")
        write_manifest(kept, args.export_kept)
    config = state["config"]
    payload = {"run": files.folder, "epoch": state["epoch"], "gamma": config["gamma"],
               "removal_score": config.get("removal_score", "loss"),
               "training_scans": len(state["train_entries"]), "kept": int(state["kept"].sum()),
               "validation_scans": len(state["validation"]["entries"]), "removed": rows}
    if ranking is not None:
        payload["audit"] = ranking
    if args.export_kept:
        payload["kept_manifest"] = os.path.abspath(args.export_kept)
    if args.json:
        print_json(payload)
        return 0
    removed = [row for row in rows if was_removed(row)]
    excluded = [row for row in rows if not was_removed(row)]
    if ranking is not None:
        _print_ranking(ranking, args.top)
        say(f"the training scans ranked by the out-of-fold audit (the top {min(args.top, len(ranking))} of "
            f"{len(ranking)}): {files.audit}")
    if removed:
        print_table(removed, ["path", "epoch", "loss", "threshold", "loss_over_mean", "label", "score"])
    when = "before training" if payload["removal_score"] == "audit" else f"by epoch {state['epoch']}"
    say(f"{len(removed)} of {len(state['train_entries'])} training scans removed {when} "
        f"(removal score {payload['removal_score']}, gamma {payload['gamma']})")
    if excluded:
        print_table(excluded, ["path", "label", "reason"])
        say(f"{len(excluded)} scans left out before training: they could not be prepared")
    if args.export_kept:
        say(f"{len(kept)} scans (kept and validation) written to {payload['kept_manifest']}")
    return 0
