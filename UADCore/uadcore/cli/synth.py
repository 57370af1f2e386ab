"""`uad synth OUT`: write the synthetic cohort."""

from __future__ import annotations

import os
import time

from uadcore.cli.output import print_json, say

HELP = "write a synthetic cohort (healthy and lesioned subjects from the MNI152 template)"


def add_parser(commands) -> None:
    from uadcore.synth.lesions import DEFAULT_KINDS as DEFAULT_LESION_KINDS
    from uadcore.synth.lesions import KINDS as LESION_KINDS

    parser = commands.add_parser(
        "synth",
        help=HELP,
        description=(
            "Write a synthetic cohort derived from the MNI152 2009a template shipped with nilearn: "
            "healthy subjects (deformed, re-contrasted, bias field, noise, varied orientation and "
            "spacing) and unhealthy ones with lesions and exact masks, plus manifest.csv. "
            "It exercises UAD; it is not real patient data."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="new or empty folder to write into")
    parser.add_argument("--healthy", type=int, default=60, metavar="N", help="healthy subjects (default 60)")
    parser.add_argument("--unhealthy", type=int, default=20, metavar="M", help="subjects with lesions (default 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same cohort (default 0)")
    parser.add_argument("--lesions", default=",".join(DEFAULT_LESION_KINDS), metavar="K1,K2",
                        help=f"lesion kinds of the unhealthy subjects, in turn (default {','.join(DEFAULT_LESION_KINDS)}; "
                             f"also: {', '.join(k for k in LESION_KINDS if k not in DEFAULT_LESION_KINDS)})")
    parser.add_argument("--workers", type=int, default=None, metavar="W", help="processes (default: one per CPU core)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore.synth import synthesize_cohort

    started = time.perf_counter()
    manifest = synthesize_cohort(
        args.out, healthy=args.healthy, unhealthy=args.unhealthy, seed=args.seed, workers=args.workers, progress=not args.json,
        lesion_kinds=[kind.strip() for kind in args.lesions.split(",") if kind.strip()],
    )
    result = {
        "out": os.path.abspath(args.out),
        "manifest": os.path.abspath(manifest),
        "healthy": args.healthy,
        "unhealthy": args.unhealthy,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.json:
        print_json(result)
    else:
        say(f"wrote {args.healthy} healthy and {args.unhealthy} unhealthy subjects in {result['seconds']} s")
        print(result["manifest"])
    return 0
