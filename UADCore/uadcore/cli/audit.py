"""`uad audit DATA --out DIR`: rank every scan of a training set by how abnormal a
model that never saw it finds it (out of fold, `uadcore.audit`), for review
before training."""

from __future__ import annotations

from uadcore.cli.output import print_json, print_table, say

HELP = "rank the scans of a training set by how abnormal they are, each scored by a model that never saw it"


def add_parser(commands) -> None:
    from uadcore.device import DEVICES
    from uadcore.cli.lazy import Later, model_names
    from uadcore.io.run_files import AUDIT_NAME

    def default():  # the audit's own defaults (uadcore.audit loads torch: read for a help only)
        from uadcore.audit import AuditPlan

        return AuditPlan()
    parser = commands.add_parser(
        "audit",
        help=HELP,
        description="Split the scans of DATA into k folds; for each, train a model on the other folds and map the "
                    "held-out scans, then calibrate every map on everybody else's. Every scan gets a score from a model "
                    f"that could not learn its lesion, its percentile in the set and its map's top region; DIR/{AUDIT_NAME} "
                    "ranks them, the most suspicious first. Scans labelled unhealthy in a manifest are counted in the "
                    "top of the ranking.",
    )
    parser.add_argument("data", metavar="DATA", help="the training scans: a folder or a manifest CSV")
    parser.add_argument("--out", metavar="DIR", required=True, help="new folder for the audit")
    parser.add_argument("--model", choices=model_names(), metavar="MODEL",
                        help=Later(lambda: f"the model that scores: {', '.join(model_names())} (default {default().model}: "
                                           "seconds a fold)"))
    parser.add_argument("--map", metavar="KIND", help="the map kind it ranks by (default: the model's audit map; for "
                        "normative near-z, |z| against the closest healthy statistics within a voxel)")
    parser.add_argument("--folds", type=int, metavar="K", help=Later(lambda: f"folds (default {default().folds})"))
    parser.add_argument("--size", choices=["paper", "small"], help="model size, as uad train --size")
    parser.add_argument("--registration", choices=["affine", "deformable"],
                        help=Later(lambda: f"registration of the brain preparation (default {default().registration}: "
                                           "healthy anatomy a few mm off the others' looks less abnormal)"))
    parser.add_argument("--epochs", type=int, metavar="E", help="epochs of each fold's training (default: the model's)")
    parser.add_argument("--seed", type=int, help=Later(lambda: f"seed of the folds and the runs (default {default().seed})"))
    parser.add_argument("--maps", action="store_true", help="also write each scan's calibrated map (DIR/maps/, NIfTI on its "
                        "own grid)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default auto: CUDA when present")
    parser.add_argument("--workers", type=int, metavar="W", help="processes preparing scans (default: one per core)")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="scans listed on the terminal (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the summary and every row)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.audit import AuditPlan, run_audit
    from uadcore.errors import UADError

    default = AuditPlan()
    folds = default.folds if args.folds is None else args.folds
    if folds < 2:
        raise UADError(f"--folds {folds}: an audit needs at least 2 folds")
    plan = AuditPlan(args.model or default.model, folds, default.seed if args.seed is None else args.seed, args.size,
                     (("epochs", args.epochs),) if args.epochs else (), args.map, args.registration or default.registration)
    result = run_audit(args.data, args.out, plan, args.device, args.workers, args.maps, progress=not args.json)
    if args.json:
        print_json(result)
        return 0
    rows = [{**r, "score": round(r["score"], 4), "peak_ras_mm": " ".join(map(str, r["peak_ras_mm"]))}
            for r in result["rows"][: args.top] if "problem" not in r]
    print_table(rows, ["rank", "path", "label", "score", "percentile_in_set", "peak_ras_mm", "region_ml"])
    if "unhealthy" in result:
        say(f"{result['unhealthy_in_top_k']} of the {result['unhealthy']} scans labelled unhealthy are among the top "
            f"{result['unhealthy']} (AUROC {result['auroc']:.3f})")
    if result["problems"]:
        say(f"{result['problems']} scans could not be prepared; their rows in {result['audit']} say why")
    say(f"{result['scans']} scans ranked, each by a model of {folds - 1} of {folds} folds that did not see it: "
        f"{result['audit']}")
    return 0
