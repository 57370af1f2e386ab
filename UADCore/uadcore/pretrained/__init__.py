"""Models trained by UAD's makers and shipped inside the package (no download,
ever), so that a first map of any T1 scan comes before training on one's own data.

Each one is a folder ``uadcore/pretrained/<name>/`` with ``checkpoint.pt`` (a
finished run's checkpoint cut to what scoring needs: no optimiser, no paths of the
scans it learnt from, its calibration stored as float16) and
``MODEL_CARD.md`` (data, preparation, licence and attribution, measured numbers,
what it is not for). ``pretrained:NAME`` stands for that folder wherever a run is
taken: ``uad score``, ``uad evaluate``, the Anomaly map panel; ``uad models`` lists
them. `export` makes one from a finished run (``benchmarks/pretrained.py``).
"""

from __future__ import annotations

import os

from uadcore.errors import UADError

PREFIX = "pretrained:"
ROOT = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT = "checkpoint.pt"
CARD = "MODEL_CARD.md"
RECOMMENDED = "anomseg3d"  # the one offered first: it finds most real tumours (its model card)


def available() -> dict[str, str]:
    """{name: folder} of the shipped models, by name."""
    names = sorted(n for n in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, n, CHECKPOINT)))
    return {name: os.path.join(ROOT, name) for name in names}


def is_pretrained(run: str) -> bool:
    return str(run).startswith(PREFIX)


def run_folder(run: str) -> str:
    """The folder of ``pretrained:NAME``; any other run folder as it is. An unknown
    name is a UADError listing the shipped ones."""
    if not is_pretrained(run):
        return run
    name, shipped = run[len(PREFIX):], available()
    if name not in shipped:
        raise UADError(f"{run}: no such pretrained model; pretrained models are "
                       f"{', '.join(PREFIX + n for n in shipped) or 'none'} (uad models)")
    return shipped[name]


def summary(name: str) -> str:
    """The first line of the model card after its title: what the model is."""
    with open(os.path.join(ROOT, name, CARD), encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    return lines[0] if lines else ""


def export(run_dir: str, out_dir: str, half_weights: bool = True) -> str:
    """Write the finished run ``run_dir`` as a shipped model into ``out_dir``: the
    checkpoint with only what `uadcore.io.checkpoint.FinishedRun` reads, the
    calibration's tensors in float16 and, with ``half_weights``, the model's too
    (loaded back as float32; `benchmarks/pretrained.py` keeps the weights float32
    where float16 moves a map by more than 1e-3 of its maximum, as it does for both
    shipped models), the validation scans named by file name only. Returns the
    checkpoint's path."""
    import torch

    from uadcore.io.checkpoint import load_run, save_checkpoint

    state = load_run(run_dir)
    if not state.get("done"):
        raise UADError(f"{run_dir}: training has not finished; only a finished run can be shipped")

    def half(tensors: dict) -> dict:
        return {k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in tensors.items()}

    config = {key: state["config"][key] for key in ("model", "model_params", "amp") if key in state["config"]}
    validation = dict(state.get("validation", {}))
    validation["entries"] = [{"path": os.path.basename(e["path"]), "label": e.get("label")}
                             for e in validation.get("entries", [])]
    lean = {"done": True, "epoch": state["epoch"], "config": config, "preset": state["preset"],
            "model": half(state["model"]) if half_weights else state["model"], "validation": validation,
            "calibration": {kind: half(c) for kind, c in state.get("calibration", {}).items()},
            "train_entries": []}  # the scans it learnt from are named in its model card
    os.makedirs(out_dir, exist_ok=True)
    return save_checkpoint(lean, os.path.join(out_dir, CHECKPOINT))
