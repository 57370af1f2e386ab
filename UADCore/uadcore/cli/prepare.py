"""`uad prepare DATA [--shard K/N]`: prepare scans into the shared preparation cache
(`uadcore.preprocess.cache`) ahead of training, one shard of them per process, so
that thousands of scans prepare as a job array on many machines and `uad train`
then reads them from the cache.

K/N (K from 1) defaults to the job's place in a SLURM array
(``SLURM_ARRAY_TASK_ID`` - ``SLURM_ARRAY_TASK_MIN`` + 1 of ``SLURM_ARRAY_TASK_COUNT``)
or among torchrun's processes (``RANK`` + 1 of ``WORLD_SIZE``); without either it
is 1/1, every scan. Shard K takes scans K, K + N, K + 2N, ... of DATA.
"""

from __future__ import annotations

import os

from uadcore.cli.output import print_json, say

HELP = "prepare scans into the cache ahead of training (a shard per job: SLURM arrays, torchrun)"


def add_parser(commands) -> None:
    from uadcore.cli.lazy import Later, model_names
    from uadcore.train.config import TrainConfig

    parser = commands.add_parser(
        "prepare",
        help=HELP,
        description="Read and prepare the scans of DATA for a model (skull stripping, bias correction, registration, "
                    "resampling) into the preparation cache ($UAD_CACHE_DIR), which uad train, score and evaluate read. "
                    "With --shard K/N this process prepares every N-th scan from the K-th; a SLURM array job or "
                    "torchrun gives K/N itself.",
    )
    parser.add_argument("data", metavar="DATA", help="a folder of scans or a manifest CSV (as uad train --data)")
    parser.add_argument("--model", choices=model_names(), metavar="MODEL", default=TrainConfig.model,
                        help=Later(lambda: f"the model whose preparation to make: {', '.join(model_names())} "
                                           f"(default {TrainConfig.model})"))
    parser.add_argument("--size", choices=["paper", "small"], help="as uad train --size (the small size prepares some "
                        "models' scans smaller)")
    parser.add_argument("--skull-strip", choices=["auto", "yes", "no"], help="as uad train --skull-strip")
    parser.add_argument("--registration", choices=["affine", "deformable"], help="as uad train --registration")
    parser.add_argument("--shard", metavar="K/N", help="prepare the K-th of N shares of the scans (K from 1; default: "
                        "from SLURM_ARRAY_TASK_ID/COUNT or torchrun's RANK/WORLD_SIZE, else 1/1)")
    parser.add_argument("--workers", type=int, metavar="W", help="processes preparing scans (default: one per core)")
    parser.add_argument("--json", action="store_true", help="print a summary as one JSON object")
    parser.set_defaults(handler=run)


def shard_of(text: str | None, environ=os.environ) -> tuple[int, int]:
    """(K, N), K from 1: from ``--shard K/N``, else SLURM's array or torchrun's rank, else (1, 1)."""
    from uadcore.errors import UADError

    if text:
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise UADError(f"--shard {text}: expected K/N, e.g. 3/8") from None
        if not 1 <= k <= n:
            raise UADError(f"--shard {text}: K must be between 1 and N")
        return k, n
    if environ.get("SLURM_ARRAY_TASK_ID") and environ.get("SLURM_ARRAY_TASK_COUNT"):
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(environ["SLURM_ARRAY_TASK_ID"]) - first + 1, int(environ["SLURM_ARRAY_TASK_COUNT"])
    if environ.get("RANK") and environ.get("WORLD_SIZE"):
        return int(environ["RANK"]) + 1, int(environ["WORLD_SIZE"])
    return 1, 1


def run(args) -> int:
    from uadcore.train.config import preset_params
    from uadcore.errors import UADError
    from uadcore.io import ScanEntry, load_dataset
    from uadcore.models import model_spec
    from uadcore.preprocess import cache as disk_cache
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    root = disk_cache.cache_root()
    if root is None:
        raise UADError("uad prepare: the preparation cache is off (UAD_CACHE=off); there is nowhere to prepare into")
    k, n = shard_of(args.shard)
    spec = model_spec(args.model)
    preset = make_preset(spec.preset, **spec.preset_options(preset_params(args.model, args.size, skull_strip=args.skull_strip,
                                                                     registration=args.registration)))
    entries = load_dataset(args.data)
    # the entries as training reads them (scan and brain mask; lesion masks are evaluation's)
    shard = [ScanEntry(e.path, brain=e.brain) for e in entries[k - 1 :: n]]
    problems: dict = {}
    prepare_scans(shard, preset, args.workers, progress=not args.json, problems=problems)
    summary = {"data": os.path.abspath(args.data), "model": args.model, "preset": preset.name, "shard": f"{k}/{n}",
               "scans": len(shard), "of": len(entries), "prepared": len(shard) - len(problems), "cache": root,
               "problems": [{"path": path, "reason": reason} for path, reason in problems.items()]}
    if args.json:
        print_json(summary)
    else:
        say(f"shard {k}/{n}: {summary['prepared']} of {len(shard)} scans prepared for {args.model} ({preset.name}) "
            f"in {root}" + (f"; {len(problems)} could not be (training will leave them out):" if problems else ""))
        for path, reason in problems.items():
            say(f"  {reason}")
    return 0
