"""`uad experiment impurity`: the paper's impurity experiment on the synthetic cohort."""

from __future__ import annotations

from uadcore.cli.output import print_json, say

HELP = "reproduce a paper's experiment on the synthetic cohort"


def add_parser(commands) -> None:
    from uadcore.device import DEVICES

    parser = commands.add_parser("experiment", help=HELP)
    which = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    impurity = which.add_parser(
        "impurity",
        help="AUROC with 0/3/6/12 %% unhealthy training scans, baseline vs outlier removal over gamma",
        description="Behrendt et al., Fig. 2: training sets with injected unhealthy scans, baseline against outlier "
                    "removal for gamma in 1.3..1.5 by the training loss, by the calibrated map's top 1 %% and by the "
                    "out-of-fold audit; AUROC on an independent test set, fractions removed, the injected scans in "
                    "the audit's top k.",
    )
    impurity.add_argument("--out", required=True, metavar="DIR", help="new folder for the cohort, runs and results")
    impurity.add_argument("--healthy-train", type=int, default=48, metavar="N", help="healthy training scans (default 48)")
    impurity.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    impurity.add_argument("--paper", action="store_true", help="the paper's model and schedule (500 epochs; for a GPU)")
    impurity.add_argument("--lesions", default="tumour", metavar="KIND",
                          help="lesion kind of the injected and unhealthy test scans: tumour (default), small-mass (5-15 mm), "
                               "wm-lesions, cavity")
    impurity.add_argument("--levels", metavar="P1,P2", help="impurity levels in %% (default 0,3,6,12)")
    impurity.add_argument("--gammas", metavar="G1,G2", help="gammas of the removal runs (default 1.3,1.4,1.5)")
    impurity.add_argument("--audit-with", metavar="M1,M2", default="",
                          help="also audit each contaminated training set out of fold with these models (e.g. normative,ae3d): "
                               "rankings, no final model")
    impurity.add_argument("--seed", type=int, default=0)
    impurity.add_argument("--device", default="auto", choices=DEVICES)
    impurity.add_argument("--json", action="store_true", help="print one JSON object")
    impurity.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.experiments.impurity import ImpurityPlan, run_impurity

    from uadcore.errors import UADError
    from uadcore.models import MODELS
    from uadcore.synth import LESION_KINDS

    if args.lesions not in LESION_KINDS:
        raise UADError(f"--lesions {args.lesions}: not a lesion kind; kinds are {', '.join(LESION_KINDS)}")
    audit_models = tuple(m.strip() for m in args.audit_with.split(",") if m.strip())
    unknown = [m for m in audit_models if m not in MODELS]
    if unknown:
        raise UADError(f"--audit-with {','.join(unknown)}: no such model; models are {', '.join(MODELS)}")
    options = {"healthy_train": args.healthy_train, "lesion_kind": args.lesions, "audit_models": audit_models}
    if args.levels:
        options["levels_percent"] = _numbers(args.levels, "--levels", float)
    if args.gammas:
        options["gammas"] = _numbers(args.gammas, "--gammas", float)
    if args.paper:
        train = {"epochs": 500, "outlier_every": 5, "reinit_at": [50, 100], "batch_size": 32, "removal_start": "paper"}
        plan = ImpurityPlan(**options, train=train, model_params={})
    else:
        plan = ImpurityPlan(**options, train={**ImpurityPlan.train_default(), "epochs": args.epochs})
    result = run_impurity(args.out, plan, seed=args.seed, device=args.device, progress=not args.json)
    if args.json:
        print_json(result)
    else:
        print(open(result["table"], encoding="utf-8").read(), end="")
        say(f"plot: {result['plot']}")
    return 0


def _numbers(text: str, flag: str, kind) -> tuple:
    from uadcore.errors import UADError

    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UADError(f"{flag} {text}: not a comma-separated list of numbers") from None
    if not values:
        raise UADError(f"{flag}: give at least one value")
    return tuple(int(v) if float(v).is_integer() else v for v in values)
