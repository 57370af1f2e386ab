"""What the audit's two choices do: the registration of its preparation (affine,
deformable) and the shares of the calibrated map its score averages (each of the
highest 1 %, 0.5 %, 0.3 %, 0.2 %, 0.1 %, 0.05 % alone, and the audit's own
score, the highest of 1 %, 0.2 % and 0.05 % relative to the set), on the training
sets of `benchmarks.audit`.

    python -m benchmarks.audit_sweep --out DIR [--sets real,demo,demo-wm,impurity-small-mass,...] [--seeds 0,1,2]
                                     [--registrations affine,deformable]

For each set and registration the out-of-fold `near-z` maps are made once, as `uad
audit` makes them (the same folds, runs and calibration on the set,
`uadcore.audit`), and every scan is scored with each share; reported: the injected
scans in the top k (k: their number) and the AUROC. Sets: ``real`` (100 IXI with
the tumours, the white-matter-lesion cases, all of them), ``demo``, ``demo-wm``
(the demo's training set with tumours or small white-matter lesions), and
``impurity-KIND`` (the impurity experiment's 12 % set of lesion KIND, one per seed
of ``--seeds``). Writes DIR/sweep.json and DIR/sweep.md.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchmarks.audit import folder_name, impurity_sets, training_sets
from benchmarks.machine import machine_info

FRACTIONS = (0.01, 0.005, 0.003, 0.002, 0.001, 0.0005)


def share_name(fractions: tuple) -> str:
    return " + ".join(f"{100 * f:g}" for f in fractions) + " %"


def out_of_fold_maps(manifest: str, out: str, registration: str):
    """(raw out-of-fold near-z maps (N, I, J, K), brains (N, I, J, K), labels (N,)) of the scans that could be
    prepared, as `uad audit` maps them (`uadcore.audit.map_out_of_fold`)."""
    from uadcore.audit import AuditPlan, map_out_of_fold
    from uadcore.io import read_manifest

    mapped = [(row, r) for row, r in map_out_of_fold(read_manifest(manifest), out, AuditPlan(registration=registration),
                                                      "cpu", progress=False) if r is not None]
    return (np.stack([r.model_map for _, r in mapped]), np.stack([np.asarray(r.prepared.region, bool) for _, r in mapped]),
            np.array([row["label"] == "unhealthy" for row, _ in mapped]))


def scored(maps: np.ndarray, regions: np.ndarray, labels: np.ndarray) -> dict:
    """{shares: {"found": injected in the top k, "k": k, "auroc": ...}} of each of `FRACTIONS` alone and of the
    audit's own `TOP_FRACTIONS`."""
    from uadcore.metrics import sample_metrics
    from uadcore.score.out_of_fold import TOP_FRACTIONS, calibrated_on_the_set, judged, sample_scores

    calibrated = calibrated_on_the_set(maps, regions)[0]
    k, result = int(labels.sum()), {}
    for fractions in [(f,) for f in FRACTIONS] + [TOP_FRACTIONS]:
        scores = sample_scores(calibrated, judged(regions), fractions)
        found = int(labels[np.argsort(-scores, kind="stable")[:k]].sum())
        result[share_name(fractions)] = {"found": found, "k": k, "auroc": round(sample_metrics(scores, labels)["sample_auroc"], 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sets", default="real,demo,demo-wm,impurity-tumour,impurity-small-mass,impurity-wm-lesions")
    parser.add_argument("--seeds", default="0,1,2", help="cohort seeds of the impurity sets")
    parser.add_argument("--registrations", default="affine,deformable")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sets = {}
    for name in args.sets.split(","):
        if name == "real":
            sets.update(training_sets(os.path.join(args.out, "real"), 100, False))
        elif name in ("demo", "demo-wm"):
            sets.update(training_sets(os.path.join(args.out, name), 0, True, "tumour" if name == "demo" else "wm-lesions"))
        elif name.startswith("impurity-"):
            sets.update(impurity_sets(args.out, name[len("impurity-"):], [int(s) for s in args.seeds.split(",")]))
    rows = []
    for name, manifest in sets.items():
        for registration in args.registrations.split(","):
            folder = os.path.join(args.out, "runs", folder_name(name), registration)
            rows.append({"set": name, "registration": registration, **scored(*out_of_fold_maps(manifest, folder, registration))})
            print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, "sweep.json"), "w") as handle:
        json.dump({"machine": machine_info(), "fractions": FRACTIONS, "rows": rows}, handle, indent=1)
    columns = [k for k in rows[0] if k.endswith("%")] if rows else []
    lines = ["| training set | registration | " + " | ".join(f"top {c}" for c in columns) + " |", "|---|---|" + "---|" * len(columns)]
    lines += [f"| {r['set']} | {r['registration']} | " + " | ".join(
        f"{r[c]['found']}/{r[c]['k']} ({r[c]['auroc']:.3f})" for c in columns) + " |" for r in rows]
    with open(os.path.join(args.out, "sweep.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
