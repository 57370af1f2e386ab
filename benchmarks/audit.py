"""The out-of-fold audit (`uad audit`) finding contaminated scans in a training set.

    python -m benchmarks.audit --out DIR [--model normative] [--registration affine|deformable] [--healthy 100]
                               [--synthetic | --impurity [--seeds 0,1,2]] [--lesions KIND]

Real scans (default): ``--healthy`` IXI T1 scans of ``../shared/realdata`` (drawn
with seed 0) with lesion cases injected, one training set per lesion group
(tumours: the BraTS 2018 native-T1, TCGA and post-contrast gliomas; white-matter
lesions), and all of them together; each set audited in 5 folds. Reported per set:
the injected scans among the top k of the ranking (k: their number), and how many
of those have their map's peak on their lesion (within `PEAK_TOLERANCE_MM`: found
by the lesion, not by something else), the share of healthy scans in that top k,
the AUROC of the audit score, the scans removal by the audit would take out at
gamma 1.3, 1.4 and 1.5 (`removed_at`), and the audit's wall
time (preparation excluded: the scans are prepared first, cached, as `uad prepare`
would). ``--synthetic``: the demo's training set instead (48 healthy, 4 injected
tumour scans, seed 0); with ``--lesions wm-lesions`` its injected scans carry
small white-matter lesions (3-10 of 3-6 mm radius) instead. ``--impurity``: the
training set of `uad experiment impurity` at 12 % (56 healthy, 7 injected scans of
``--lesions``, e.g. ``small-mass``: one 5-15 mm mass), one per cohort seed of
``--seeds``. ``--registration``: the audit's preparation (default: the audit's).

Writes DIR/audit.json and DIR/audit.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.realdata import REALDATA
from uadcore.io import read_manifest, write_manifest

TUMOURS = ("brats18-", "tcga-", "t1c-")
WHITE_MATTER = ("wmh-",)
GAMMAS = (1.3, 1.4, 1.5)  # of removal by the audit, as the impurity experiment sweeps them
PEAK_TOLERANCE_MM = 2.5  # a peak this close to its lesion is on it: one voxel of the model grid it was found on


def peaks_on_lesions(scored: list[dict], manifest: str) -> dict:
    """Of the audited scans with a lesion mask in ``manifest``: how far (mm) each map's
    peak (audit.csv's ``peak_ras_mm``, on the scan's grid) is from its lesion, 0
    inside; {path: mm}. A scan ranked high with its peak off its lesion was found by
    something else."""
    from uadcore.io import read_scan

    masks = {e.path: e.mask for e in read_manifest(manifest) if e.mask}
    distances = {}
    for row in scored:
        if row["path"] not in masks or not row.get("peak_ras_mm"):
            continue
        mask = read_scan(masks[row["path"]])
        lesion = np.argwhere(mask.array > 0.5)
        if len(lesion) == 0:
            continue
        index = np.clip(np.round(mask.grid.world_to_index(np.asarray([row["peak_ras_mm"]]))[0]).astype(int), 0, np.asarray(mask.grid.shape) - 1)
        # the nearest lesion voxel's centre from the peak's voxel (0 inside), in mm
        distances[row["path"]] = round(float(np.min(np.linalg.norm((lesion - index) * np.asarray(mask.grid.spacing), axis=1))), 1)
    return distances


def removed_at(scored: list[dict], gammas=GAMMAS) -> dict:
    """What removal by the audit (``--removal-score audit``: a score above gamma x the
    mean, `uadcore.train.outliers.find_outliers`) would take out of the audited set
    (rows with a score and a label), for each of ``gammas``: {gamma: {"injected": n,
    "healthy": n}}. A run prepares with its own registration, so its removal can differ."""
    import torch

    from uadcore.train.outliers import find_outliers

    scores = torch.tensor([r["score"] for r in scored], dtype=torch.float64)
    unhealthy = torch.tensor([r["label"] == "unhealthy" for r in scored])
    result = {}
    for gamma in gammas:
        remove = find_outliers(scores, torch.ones_like(unhealthy), gamma)[0]
        result[str(gamma)] = {"injected": int((remove & unhealthy).sum()), "healthy": int((remove & ~unhealthy).sum())}
    return result


def folder_name(name: str) -> str:
    """A training set's name as a folder name: every character but letters and digits a dash."""
    return "".join(c if c.isalnum() else "-" for c in name)


def impurity_sets(out: str, lesions: str, seeds: list[int]) -> dict[str, str]:
    """name -> manifest of the impurity experiment's 12 % training set, one per cohort seed."""
    from uadcore.experiments.impurity import ImpurityPlan
    from uadcore.synth import synthesize_cohort

    plan, sets = ImpurityPlan(lesion_kind=lesions), {}
    healthy, unhealthy = plan.cohort_size()
    for seed in seeds:
        folder = os.path.join(out, f"impurity-{lesions}-seed{seed}")
        entries = read_manifest(synthesize_cohort(os.path.join(folder, "cohort"), healthy=healthy, unhealthy=unhealthy, seed=seed,
                                                  progress=False, lesion_kinds=(lesions,)))
        sets[f"impurity 12 %, {lesions}, seed {seed}"] = write_manifest(plan.split(entries, 12)[0], os.path.join(folder, "train-12pct.csv"))
    return sets


def training_sets(out: str, healthy_count: int, synthetic: bool, lesions: str = "tumour") -> dict[str, str]:
    """name -> manifest of a training set with injected lesion scans labelled unhealthy."""
    if synthetic:
        from uadcore.cli.demo import DemoPlan
        from uadcore.synth import synthesize_cohort

        plan = DemoPlan()  # the demo's cohort, and of it its training set
        entries = read_manifest(synthesize_cohort(os.path.join(out, "cohort"), healthy=plan.healthy_train + plan.healthy_test,
                                                  unhealthy=plan.injected + plan.unhealthy_test, seed=0, lesion_kinds=(lesions,)))
        entries = ([e for e in entries if e.label == "healthy"][: plan.healthy_train]
                   + [e for e in entries if e.label == "unhealthy"][: plan.injected])
        name = "synthetic (the demo's training set)" if lesions == "tumour" else f"synthetic, {lesions} injected"
        return {name: write_manifest(entries, os.path.join(out, "synthetic.csv"))}
    healthy = read_manifest(os.path.join(REALDATA, "healthy.csv"))
    healthy = [healthy[i] for i in sorted(random.Random(0).sample(range(len(healthy)), healthy_count))]
    lesions = read_manifest(os.path.join(REALDATA, "lesions.csv"))
    named = lambda prefixes: [e for e in lesions if os.path.basename(os.path.dirname(e.path)).startswith(prefixes)]
    sets = {"tumours": named(TUMOURS), "white-matter lesions": named(WHITE_MATTER)}
    sets["all lesion cases"] = sets["tumours"] + sets["white-matter lesions"]
    return {name: write_manifest(healthy + injected, os.path.join(out, f"{name.replace(' ', '-')}.csv"))
            for name, injected in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="normative")
    parser.add_argument("--healthy", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--impurity", action="store_true")
    parser.add_argument("--seeds", default="0", help="with --impurity: cohort seeds, comma-separated")
    parser.add_argument("--lesions", default="tumour", help="with --synthetic or --impurity: the injected scans' lesion kind")
    parser.add_argument("--registration", choices=["affine", "deformable"])
    args = parser.parse_args()
    from uadcore.audit import AuditPlan, run_audit
    from uadcore.io import load_dataset
    from uadcore.models import MODELS
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    os.makedirs(args.out, exist_ok=True)
    plan = AuditPlan(args.model, args.folds, registration=args.registration or AuditPlan().registration)
    sets = (impurity_sets(args.out, args.lesions, [int(s) for s in args.seeds.split(",")]) if args.impurity
            else training_sets(args.out, args.healthy, args.synthetic, args.lesions))
    results = []
    for name, manifest in sets.items():
        spec = MODELS[args.model]
        prepare_scans(load_dataset(manifest), make_preset(spec.preset, **spec.preset_options(plan.preset_params())),
                      progress=False, problems={})
        started = time.perf_counter()
        folder = os.path.join(args.out, folder_name(name))
        audit = run_audit(manifest, folder, plan, progress=False)
        seconds = time.perf_counter() - started
        scored = [r for r in audit["rows"] if "problem" not in r]
        k = audit.get("unhealthy", 0)
        off = peaks_on_lesions(scored, manifest)
        results.append({"set": name, "scans": audit["scans"], "injected": k, "injected_in_top_k": audit.get("unhealthy_in_top_k"),
                        "healthy_in_top_k_share": round(audit.get("healthy_in_top_k", 0) / max(1, len(scored) - k), 4),
                        "auroc": audit.get("auroc"), "seconds": round(seconds, 1), "problems": audit["problems"],
                        "injected_ranks": [r["rank"] for r in scored if r["label"] == "unhealthy"],
                        "removed_at_gamma": removed_at(scored),
                        "injected_in_top_k_by_the_lesion": sum(1 for r in scored[:k] if off.get(r["path"], np.inf) <= PEAK_TOLERANCE_MM),
                        "peak_to_lesion_mm": [off.get(r["path"]) for r in scored if r["label"] == "unhealthy"]})
        print(json.dumps(results[-1]), flush=True)
    report = {"machine": machine_info(), "model": args.model, "folds": args.folds, "registration": plan.registration,
              "results": results}
    with open(os.path.join(args.out, "audit.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    lines = [f"Out-of-fold audit with `{args.model}`, {args.folds} folds, {plan.registration} registration "
             f"({report['machine'].get('cpu', '')}):", "",
             "| training set | scans | injected (scored) | injected in top k (peak on the lesion) | healthy removed at that cut | AUROC | "
             "not preparable | seconds | " + " | ".join(f"removed at gamma {g} (injected, healthy)" for g in GAMMAS) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(GAMMAS)]
    lines += [f"| {r['set']} | {r['scans']} | {r['injected']} | {r['injected_in_top_k']} ({r['injected_in_top_k_by_the_lesion']}) | "
              f"{100 * r['healthy_in_top_k_share']:.1f} % "
              f"| {r['auroc']} | {r['problems']} | {r['seconds']} | "
              + " | ".join(f"{r['removed_at_gamma'][str(g)]['injected']}, {r['removed_at_gamma'][str(g)]['healthy']}" for g in GAMMAS)
              + " |" for r in results]
    with open(os.path.join(args.out, "audit.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
