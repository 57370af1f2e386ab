"""`uad train`: train a model on healthy scans, with outlier removal during training.

Also the entry point for DDP: ``torchrun --nproc_per_node=N -m uadcore train ...``.
"""

from __future__ import annotations

from uadcore.cli.output import print_json, say

HELP = "train a model on a folder or manifest of healthy scans"


def add_parser(commands) -> None:
    from uadcore.device import DEVICES
    from uadcore.cli.lazy import Later, model_names
    from uadcore.score.calibrate import MIN_SCANS
    from uadcore.train.config import MIN_STEPS_PER_EPOCH, PAPER_BATCH, REMOVAL_SCORES, REMOVAL_STARTS, SETTLED, TrainConfig

    default = TrainConfig()  # the defaults the help names are the configuration's own
    parser = commands.add_parser(
        "train",
        help=HELP,
        description=(
            "Train a model on healthy scans. Every --outlier-every epochs, scans whose loss exceeds "
            "gamma x the epoch's mean loss are removed from training and listed in RUN/outliers.csv. "
            "Stop with Ctrl-C, SIGTERM or by creating RUN/STOP (what was trained is kept); continue with --resume RUN."
        ),
    )
    parser.add_argument("--data", metavar="DIR|MANIFEST", help="training scans: a folder or a manifest CSV")
    parser.add_argument("--model", choices=model_names(), metavar="MODEL",
                        help=Later(lambda: f"model to train: {', '.join(model_names())} (default {default.model})"))
    parser.add_argument("--out", metavar="RUN", help="new run folder")
    parser.add_argument("--resume", metavar="RUN", help="continue the stopped or killed run in RUN")
    parser.add_argument("--config", metavar="FILE", help="JSON file of settings (flags override it)")
    parser.add_argument("--size", choices=["paper", "small"], help="model size: the paper's, or small for CPUs (default paper)")
    parser.add_argument("--epochs", type=int, metavar="E", help=Later(lambda: f"total epochs (default {default.epochs}{_by_model('epochs')})"))
    parser.add_argument("--gamma", type=float, metavar="G", help=f"outlier threshold factor (default {default.gamma:g})")
    parser.add_argument("--no-outlier-removal", dest="outlier_removal", action="store_false", default=None, help="train on every scan")
    parser.add_argument("--outlier-every", type=int, metavar="N", help=f"epochs between outlier removals (default {default.outlier_every})")
    parser.add_argument("--removal-start", choices=REMOVAL_STARTS,
                        help=f"when outlier removal starts: settled (default: once the loss fell by under {SETTLED * 100:.0f} %% over "
                             "--outlier-every epochs, again after each re-initialisation) or paper (at the first removal epoch)")
    parser.add_argument("--removal-score", choices=list(REMOVAL_SCORES),
                        help="what outlier removal compares with gamma x its mean: loss (default, the paper's: the training "
                             "loss); a sample score of the reconstruction-error map calibrated on the validation scans "
                             f"(rec-top1: the mean of its highest 1 %%; whole-volume models with >= {MIN_SCANS} validation scans); "
                             "or audit: each scan's score in an out-of-fold audit of the training scans with normative (as uad "
                             "audit), once, before the first epoch (whole-volume models; RUN/audit.csv ranks every scan)")
    parser.add_argument("--reinit-at", metavar="E1,E2", help=Later(lambda: f"re-initialise the weights after these epochs (default "
                                                                         f"{_shown(default.reinit_at)}{_by_model('reinit_at')}; 'none')"))
    parser.add_argument("--classifier-epochs", type=int, metavar="E", help=f"epochs of the second stage of two-stage models (mae2d's anomaly classifier; default {default.classifier_epochs})")
    parser.add_argument("--skull-strip", choices=["auto", "yes", "no"],
                        help="brain models: deepbet skull stripping (default auto: unless a scan is already skull-stripped; "
                             "a manifest's brain column gives masks instead)")
    parser.add_argument("--registration", choices=["affine", "deformable"],
                        help="brain models: registration to MNI152 (default affine; deformable adds a smooth warp on top, "
                             "about 2 s more a scan: healthy anatomy such as the ventricles varies less)")
    parser.add_argument("--batch-size", type=int, metavar="B", help=Later(lambda: f"batch size (default {PAPER_BATCH}, smaller when that would give "
                                                                             f"under {MIN_STEPS_PER_EPOCH} steps an epoch{_by_model('batch_size')})"))
    parser.add_argument("--lr", type=float, help=Later(lambda: f"learning rate (default {default.lr:g}{_by_model('lr')})"))
    parser.add_argument("--val-fraction", type=float, metavar="F", help=f"healthy scans held out for the score reference (default {default.val_fraction:g})")
    parser.add_argument("--plateau-patience", type=int, metavar="N", help=Later(lambda: f"LR x 0.1 after N epochs without a better validation loss (0: off; "
                                   f"default {default.plateau_patience}{_by_model('plateau_patience')})"))
    parser.add_argument("--early-stop-patience", type=int, metavar="N", help=Later(lambda: f"stop after N epochs without a better validation loss (0: off; "
                                   f"default {default.early_stop_patience}{_by_model('early_stop_patience')})"))
    parser.add_argument("--checkpoint-every", type=int, metavar="N", help=Later(lambda: f"epochs between checkpoints (default {default.checkpoint_every}"
                                                                                     f"{_by_model('checkpoint_every')})"))
    parser.add_argument("--seed", type=int, help=f"random seed (default {default.seed})")
    parser.add_argument("--device", choices=DEVICES, help="default auto: CUDA when present; with --resume, where "
                        "this start trains (a run begun on a GPU goes on on the CPU and back)")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--workers", type=int, metavar="W", help="processes preparing scans (default: one per core)")
    parser.add_argument("--events", action="store_true", help="print JSON-lines events on stdout instead of a progress bar")
    parser.add_argument("--json", action="store_true", help="print the final summary as one JSON object (with --events: the last event)")
    parser.set_defaults(handler=run)


def _by_model(setting: str) -> str:
    """The models whose own default of ``setting`` differs (their spec's), for a help text."""
    from uadcore.models import MODELS

    own = [f"{name} {_shown(spec.train[setting])}" for name, spec in MODELS.items() if setting in spec.train]
    return f"; {', '.join(own)}" if own else ""


def _shown(value) -> str:
    """A default as a flag would give it: epochs as 50,100 (none for no epochs), 1e-4 as 0.0001."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_from_args(args):
    """Defaults < --config file < flags."""
    from uadcore.errors import UADError
    from uadcore.models import MODELS
    from uadcore.train import TrainConfig
    from uadcore.train.config import preset_params

    chosen = args.model or (TrainConfig.from_file(args.config).get("model") if args.config else None) or TrainConfig.model
    values = dict(MODELS[chosen].train) if chosen in MODELS else {}  # the paper's defaults for this model
    values.update(TrainConfig.from_file(args.config) if args.config else {})
    flags = {
        "data": args.data, "model": args.model, "epochs": args.epochs, "gamma": args.gamma,
        "outlier_removal": args.outlier_removal, "outlier_every": args.outlier_every, "removal_start": args.removal_start,
        "removal_score": args.removal_score,
        "batch_size": args.batch_size, "lr": args.lr, "classifier_epochs": args.classifier_epochs, "val_fraction": args.val_fraction,
        "checkpoint_every": args.checkpoint_every, "seed": args.seed,
        "plateau_patience": args.plateau_patience, "early_stop_patience": args.early_stop_patience, "device": args.device,
        "compile": args.compile, "workers": args.workers,
    }
    values.update({key: value for key, value in flags.items() if value is not None})
    if args.reinit_at is not None:
        try:
            values["reinit_at"] = [] if args.reinit_at.lower() == "none" else [int(e) for e in args.reinit_at.split(",") if e.strip()]
        except ValueError:
            raise UADError(f"--reinit-at {args.reinit_at}: expected epochs like 50,100 or 'none'") from None
    model = values.get("model", TrainConfig.model)
    if args.size == "small":
        values["model_params"] = {**MODELS[model].small, **values.get("model_params", {})}
    values["preset_params"] = preset_params(model, args.size, values.get("preset_params"), skull_strip=args.skull_strip,
                                            registration=args.registration)
    config = TrainConfig.from_dict(values, source=args.config or "uad train")
    if not config.data:
        raise UADError("uad train: --data DIR|MANIFEST is needed (or --resume RUN)")
    return config


def run(args) -> int:
    from uadcore.errors import UADError
    from uadcore.train import Events, train
    from uadcore.train.engine import Interrupted

    events = Events(json_lines=args.events)
    try:
        if args.resume:
            summary = train(None, args.resume, resume=True, events=events, device=args.device)
        else:
            if not args.out:
                raise UADError("uad train: --out RUN is needed (a new folder for the run)")
            summary = train(config_from_args(args), args.out, events=events)
    except Interrupted as stop:  # Ctrl-C: the run kept what it trained, and said so
        summary = stop.summary
    except KeyboardInterrupt:  # a Ctrl-C outside the run's own handling: out at once (a checkpoint, if any, stays)
        events.emit("stopped", signal="SIGINT", at_once=True)
        raise
    except Exception as error:
        events.emit("error", message=str(error), kind="bad input" if isinstance(error, UADError) else type(error).__name__)
        raise
    interrupted = 130 if summary.get("signal") == "SIGINT" else 0  # Ctrl-C: the shell's code for it, the run kept
    if args.events:
        return interrupted  # stdout holds the events; the last one ("done" or "stopped") is the summary
    if args.json:
        print_json(summary)
    else:
        if summary.get("stopped") and not summary["epoch"]:
            say("stopped before the first epoch ended: nothing was trained")
        elif summary.get("stopped"):
            say(f"stopped after epoch {summary['epoch']}; continue with: uad train --resume {summary['run']}")
        else:
            say(
                f"trained {summary['epochs']} epochs on {summary['scans']} scans: {summary['removed']} removed "
                f"({summary['removed_unhealthy']} labelled unhealthy), final loss {summary['final_loss']}"
            )
            if summary.get("still_improving"):
                say("the validation loss was still falling at the end: the model has not converged; "
                    "train longer (--epochs) for better maps")
            if summary.get("excluded"):
                say(f"{summary['excluded']} scans could not be prepared and were left out (see uad outliers {summary['run']})")
            say(f"run: {summary['run']}  (uad outliers {summary['run']} lists the removed scans)")
    return interrupted
