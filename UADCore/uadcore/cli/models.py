"""`uad models`: the models UAD trains, and the pretrained ones shipped with it
(`uadcore.pretrained`) that score a scan without any training."""

from __future__ import annotations

from uadcore.cli.output import print_json, print_table, say

HELP = "list the models uad trains and the pretrained ones it ships (uad score pretrained:NAME SCAN)"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "models", help=HELP,
        description="List every model `uad train --model` takes (its preprocessing and map kinds) and every pretrained "
                    "model shipped inside UAD: `uad score pretrained:NAME SCAN` maps a scan with one at once, no "
                    "training; its MODEL_CARD.md says what it learnt from, how well it works on real scans and its licence.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from uadcore import pretrained
    from uadcore.models import MODELS

    trainable = [{"model": name, "preset": spec.preset, "maps": ", ".join(spec.maps), "what": spec.summary}
                 for name, spec in MODELS.items()]
    shipped = [{"run": pretrained.PREFIX + name, "what": pretrained.summary(name),
                "card": f"{folder}/{pretrained.CARD}"} for name, folder in pretrained.available().items()]
    if args.json:
        print_json({"models": trainable, "pretrained": shipped})
        return 0
    print_table(trainable, ["model", "preset", "maps", "what"])
    print()
    if shipped:
        print_table(shipped, ["run", "what"])
        say("a pretrained model scores a scan at once: uad score pretrained:NAME SCAN --out MAP.nii.gz; "
            f"its model card: {shipped[0]['card']} (and beside the others)")
    else:
        say("no pretrained models in this installation")
    return 0
