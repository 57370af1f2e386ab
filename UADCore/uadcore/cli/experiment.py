"""`uad experiment impurity`: the paper's impurity experiment on the synthetic cohort."""

from __future__ import annotations

from uadcore.cli.output import print_json, say
from uadcore.device import DEVICES


def add_parser(commands) -> None:
    parser = commands.add_parser("experiment", help="reproduce a paper's experiment on the synthetic cohort")
    which = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    impurity = which.add_parser(
        "impurity",
        help="AUROC with 0/3/6/12 %% unhealthy training scans, baseline vs outlier removal over gamma",
        description="Behrendt et al., Fig. 2: training sets with injected unhealthy scans, baseline against outlier "
                    "removal for gamma in 1.3..1.5; AUROC on an independent test set and fractions removed.",
    )
    impurity.add_argument("--out", required=True, metavar="DIR", help="new folder for the cohort, runs and results")
    impurity.add_argument("--healthy-train", type=int, default=48, metavar="N", help="healthy training scans (default 48)")
    impurity.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    impurity.add_argument("--paper", action="store_true", help="the paper's model and schedule (500 epochs; for a GPU)")
    impurity.add_argument("--seed", type=int, default=0)
    impurity.add_argument("--device", default="auto", choices=DEVICES)
    impurity.add_argument("--json", action="store_true", help="print one JSON object")
    impurity.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.experiments.impurity import ImpurityPlan, run_impurity

    plan = ImpurityPlan(healthy_train=args.healthy_train)
    train = {**plan.train, "epochs": args.epochs}
    if args.paper:
        train = {"epochs": 500, "outlier_every": 5, "reinit_at": [50, 100], "batch_size": 32, "removal_start": "paper"}
        plan = ImpurityPlan(healthy_train=args.healthy_train, train=train, model_params={})
    else:
        plan = ImpurityPlan(healthy_train=args.healthy_train, train=train)
    result = run_impurity(args.out, plan, seed=args.seed, device=args.device, progress=not args.json)
    if args.json:
        print_json(result)
    else:
        print(open(result["table"], encoding="utf-8").read(), end="")
        say(f"plot: {result['plot']}")
    return 0
