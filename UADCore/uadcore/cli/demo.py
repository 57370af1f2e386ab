"""`uad demo`: the whole pipeline on a synthetic cohort, in minutes on a laptop CPU.

1. synthesise a cohort whose unhealthy subjects carry tumour-like lesions (as the
   BraTS gliomas of Behrendt et al.);
2. train the small AE3D on healthy scans with some unhealthy ones injected, with
   outlier removal and a short schedule (one re-initialisation), and audit the same
   training scans out of fold (`uadcore.audit`, with `normative`);
3. train the small anomaly segmenter (`anomseg3d`, self-supervised on synthetic
   anomalies) and the `normative` baseline (per-voxel healthy statistics, fitted in
   seconds) on the same training scans, and evaluate all three on scans they
   never saw;
4. write anomaly maps of a few test scans in their own geometry, slice pictures,
   the loss curve, the outlier table and a short report.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

from uadcore.cli.output import print_json, say
from uadcore.errors import UADError

HELP = "run the pipeline on a synthetic cohort (minutes on a laptop CPU)"

MARKER = ".uad-demo"  # a folder holding this file was written by `uad demo` and may be replaced by it


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is: scans per part and the training schedule."""

    healthy_train: int = 48
    injected: int = 4  # unhealthy scans hidden in the training set
    healthy_test: int = 16
    unhealthy_test: int = 20
    # 15 % held out: 7 healthy validation scans calibrate the maps (at least 5 are needed)
    schedule: dict = field(default_factory=lambda: {"epochs": 40, "outlier_every": 5, "reinit_at": [15], "batch_size": 8, "gamma": 1.4,
                                                    "checkpoint_every": 10, "val_fraction": 0.15})
    # the segmenter: its own defaults (`uadcore.models.anomseg`) but for these
    segmenter_schedule: dict = field(default_factory=lambda: {"epochs": 30, "checkpoint_every": 10})


def add_parser(commands) -> None:
    from uadcore.device import DEVICES

    parser = commands.add_parser(
        "demo",
        help=HELP,
        description="Synthesise a cohort, train AE3D with outlier removal and the anomaly segmenter, evaluate both next "
                    "to the normative baseline on unseen scans, write maps and a report.",
    )
    parser.add_argument("--out", default="uad-demo", metavar="DIR", help="output folder (default ./uad-demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args) -> int:
    result = run_demo(args.out, seed=args.seed, device=args.device, progress=not args.json)
    if args.json:
        print_json(result)
    else:
        train = result["train"]
        peak = result["peak_in_lesion"]
        say(f"sample AUROC on unseen scans: {result['sample_auroc']:.3f} ({result['sample_score']} of the "
            f"{'calibrated' if result['calibrated'] else 'raw'} map; normative baseline {result['normative']['sample_auroc']:.3f})"
            + (f"; the map peaks inside the lesion in {100 * peak:.0f} % of lesion scans" if peak is not None else "")
            + f"; removed during training: {train['removed']} ({train['removed_unhealthy']} of the {result['injected']} injected unhealthy)")
        say(f"the out-of-fold audit ranks {result['audit'].get('unhealthy_in_top_k', 0)} of the {result['injected']} injected "
            f"unhealthy scans in its top {result['injected']}: {result['audit']['audit']}")
        segmenter = result["anomseg3d"]
        say(f"anomaly segmenter: sample AUROC {segmenter['sample_auroc']:.3f}, voxel AP {segmenter['voxel_ap']:.3f} "
            f"(AE3D {result['voxel_ap']:.3f}, normative {result['normative']['voxel_ap']:.3f})"
            + (f", peaks inside the lesion in {100 * segmenter['peak_in_lesion']:.0f} %" if segmenter["peak_in_lesion"] is not None else ""))
        say(f"report: {result['report']}")
    return 0


def run_demo(out: str, seed: int = 0, device: str = "auto", progress: bool = True, plan: DemoPlan = DemoPlan()) -> dict:
    """The demo into the folder ``out``; returns its summary."""
    from uadcore.audit import AuditPlan, run_audit
    from uadcore.evaluate.run import evaluate
    from uadcore.io import read_manifest, write_manifest, write_nifti
    from uadcore.io.outputs import ANOMALY_MAP
    from uadcore.models import MODELS
    from uadcore.report import loss_png, overlay_png
    from uadcore.score.scorer import Scorer
    from uadcore.score.words import score_words
    from uadcore.synth import synthesize_cohort
    from uadcore.train import Events, TrainConfig, train
    from uadcore.io.checkpoint import load_run
    from uadcore.preprocess.dataset import prepare_scans

    out = os.path.abspath(out)
    _claim_folder(out)

    say(f"[1/4] synthesising a cohort into {out}/cohort")
    manifest = synthesize_cohort(
        os.path.join(out, "cohort"), healthy=plan.healthy_train + plan.healthy_test, unhealthy=plan.injected + plan.unhealthy_test,
        seed=seed, progress=progress, lesion_kinds=("tumour",),
    )
    entries = read_manifest(manifest)
    healthy = [e for e in entries if e.label == "healthy"]
    unhealthy = [e for e in entries if e.label == "unhealthy"]
    train_manifest = write_manifest(healthy[: plan.healthy_train] + unhealthy[: plan.injected], os.path.join(out, "train.csv"))
    test_manifest = write_manifest(healthy[plan.healthy_train :] + unhealthy[plan.injected :], os.path.join(out, "test.csv"))

    say(f"[2/4] training the small AE3D on {plan.healthy_train} healthy + {plan.injected} injected unhealthy scans, outlier removal on")
    config = TrainConfig.from_dict({"data": train_manifest, "model": "ae3d", "model_params": MODELS["ae3d"].small,
                                    "seed": seed, "device": device, **plan.schedule})
    run_dir = os.path.join(out, "run")
    summary = train(config, run_dir, events=Events(json_lines=False, progress=progress))
    say("      and the out-of-fold audit of the same training scans (normative, 5 folds): every scan ranked by a model "
        "that never saw it")
    audit = run_audit(train_manifest, os.path.join(out, "audit"), AuditPlan("normative", seed=seed), device, progress=False)

    say(f"[3/4] evaluating on {plan.healthy_test} healthy and {plan.unhealthy_test} unhealthy unseen scans, next to the normative baseline")
    scorer = Scorer(run_dir, device=device)
    test_entries = read_manifest(test_manifest)
    report = evaluate(scorer, test_entries, progress=progress)
    baseline_dir = os.path.join(out, "run-normative")
    baseline_config = TrainConfig.from_dict({"data": train_manifest, "model": "normative", "seed": seed, "device": device,
                                             "gamma": plan.schedule["gamma"], **MODELS["normative"].train})
    train(baseline_config, baseline_dir, events=Events(json_lines=False, progress=False))
    baseline = evaluate(Scorer(baseline_dir, device=device), test_entries, kind=MODELS["normative"].maps[0], progress=False)
    say("      and the small anomaly segmenter, self-supervised on synthetic anomalies in the same training scans")
    segmenter_dir = os.path.join(out, "run-anomseg3d")
    segmenter_config = TrainConfig.from_dict({
        "data": train_manifest, "model": "anomseg3d", "model_params": MODELS["anomseg3d"].small, "seed": seed, "device": device,
        "val_fraction": config.val_fraction, **MODELS["anomseg3d"].train, **plan.segmenter_schedule})
    train(segmenter_config, segmenter_dir, events=Events(json_lines=False, progress=progress))
    segmenter = evaluate(Scorer(segmenter_dir, device=device), test_entries, kind=MODELS["anomseg3d"].maps[0], progress=False)

    say("[4/4] writing maps, pictures and the report")
    pictures, maps = os.path.join(out, "pictures"), os.path.join(out, "maps")
    os.makedirs(pictures, exist_ok=True)
    examples = [e for e in test_entries if e.label == "unhealthy"][:2] + [e for e in test_entries if e.label == "healthy"][:1]
    written = []
    for (prepared, mask), entry in zip(prepare_scans(examples, scorer.preset, progress=False), examples):
        result = scorer.score_prepared([prepared], [entry.path])[0]
        name = os.path.basename(entry.path).split(".")[0]
        map_path = write_nifti(result.scan_map(), prepared.scan_grid, os.path.join(maps, f"{name}_rec.nii.gz"),
                               f"{ANOMALY_MAP} (rec)")
        title = f"{name} ({entry.label}): " + score_words(result.score, result.statistic, "rec", result.calibrated,
                                                            scorer.percentile(result.score), scorer.reference_scans("rec"))
        png = overlay_png(prepared.image, result.model_map, os.path.join(pictures, f"{name}.png"), mask, title)
        written.append({"scan": entry.path, "label": entry.label, "score": result.score, "sample_score": result.statistic,
                        "calibrated": result.calibrated, "map": map_path, "picture": png})
    state = load_run(run_dir)
    loss_picture = loss_png(state["history"], state["audit"], os.path.join(pictures, "loss.png"))
    evaluations = {"small AE3D (rec)": report, "anomseg3d (probability)": segmenter, "normative (abs-z)": baseline}
    report_path = _write_report(out, plan, summary, evaluations, state["audit"], audit, written, loss_picture)
    found = {key: audit[key] for key in ("unhealthy_in_top_k", "auroc", "audit") if key in audit}
    return {"out": out, "run": run_dir, "report": report_path, "train": summary, "injected": plan.injected, "audit": found,
            **{k: report.metric(k) for k in METRICS}, "normative": {k: baseline.metric(k) for k in METRICS},
            "anomseg3d": {"run": segmenter_dir, **{k: segmenter.metric(k) for k in METRICS}}, "maps": written}


METRICS = ("n", "sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "dice", "best_dice", "dice_at_healthy_fpr", "peak_in_lesion",
           "sample_score", "calibrated")


def _write_report(out, plan, summary, evaluations: dict, audit, ranking: dict, written, loss_picture) -> str:
    """report.md and report.json; ``evaluations``: {"model (map kind)": its evaluation}, the AE3D's first."""
    from uadcore.score.words import sample_score_words

    def fmt(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [
        "# UAD demo report", "",
        "Synthetic cohort (MNI152 template, deformed; tumour-like lesions). Not real patient data.", "",
        "## Training", "",
        f"{summary['scans']} training scans ({plan.injected} of them unhealthy, injected), {summary['epochs']} epochs, "
        f"outlier removal every {plan.schedule['outlier_every']} epochs with gamma {plan.schedule['gamma']}, re-initialised after "
        f"epochs {plan.schedule['reinit_at']}: {summary['removed']} scans removed, {summary['removed_unhealthy']} of them unhealthy.", "",
        f"![loss]({os.path.relpath(loss_picture, out)})", "",
        "| scan | epoch | loss / mean | label |", "|---|---:|---:|---|",
        *[f"| {os.path.basename(r['path'])} | {r['epoch']} | {r['loss_over_mean']} | {r['label']} |" for r in audit],
        "", "## Curation: the out-of-fold audit", "",
        f"`uad audit` of the same training scans, prepared with the deformable registration: each scored by a "
        f"`normative` model of the other 4 of 5 folds, its map "
        f"calibrated on everybody else's; the most suspicious first. {ranking.get('unhealthy_in_top_k', 0)} of the "
        f"{plan.injected} injected unhealthy scans are in its top {plan.injected} (`{os.path.relpath(ranking['audit'], out)}`).", "",
        "| rank | scan | label | score (x the set's median) | percentile in the set | peak (RAS mm) | region (ml) |",
        "|---:|---|---|---:|---:|---|---:|",
        *[f"| {r['rank']} | {os.path.basename(r['path'])} | {r['label']} | {r['score']:.2f} | {r['percentile_in_set']} | "
          f"{' '.join(map(str, r['peak_ras_mm']))} | {r['region_ml']} |" for r in ranking["rows"][:2 * plan.injected] if "problem" not in r],
        "", "## Evaluation on unseen scans", "",
        "The normative baseline: per-voxel median and spread of the same training scans, map = |z| "
        "(no learning; what a model has to beat). The anomaly segmenter (anomseg3d): a 3D U-Net trained on the same "
        "training scans to find synthetic anomalies inserted into them (never a real lesion); its map is the "
        "predicted anomaly probability.", "",
        "Maps are calibrated on the healthy validation scans (per voxel, in units of healthy "
        "variation); a scan's sample score is a statistic of its map, chosen by each run on pseudo-lesions in its "
        "validation scans (no lesion labels): `mean` (the paper's), `top1` (mean of the top 1 % of brain voxels) or "
        "`share` (of voxels above the healthy 1 % threshold). `peak_in_lesion`: the share of lesion scans whose map "
        "is highest inside the lesion.", "",
        "| metric | " + " | ".join(evaluations) + " |", "|---|" + "---:|" * len(evaluations),
        *[f"| {key} | " + " | ".join(fmt(e.metric(key)) for e in evaluations.values()) + " |"
          for key in ("calibrated", "sample_score", "n", "healthy", "unhealthy", "sample_auroc", "sample_ap", "voxel_auroc",
                      "voxel_ap", "dice", "best_dice", "dice_at_healthy_fpr", "peak_in_lesion")],
        "", "Every sample score (AUROC on the same scans):", "",
        "| model | sample score | what it is | AUROC |", "|---|---|---|---:|",
        *[f"| {model} | {name} | {sample_score_words(name, e.calibrated)} | {fmt(e.sample_scores[name]['auroc'])} |"
          for model, e in evaluations.items() for name in e.sample_scores],
        "", "## Maps", "",
        *[f"- {os.path.basename(w['scan'])} ({w['label']}), {w['sample_score']} of the {'calibrated' if w['calibrated'] else 'raw'} "
          f"rec map {w['score']:.3f}: `{os.path.relpath(w['map'], out)}`\n\n  ![{w['label']}]({os.path.relpath(w['picture'], out)})"
          for w in written],
        "",
    ]
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as handle:
        json.dump({"train": summary, "evaluations": {model: e.to_dict() for model, e in evaluations.items()}, "maps": written},
                  handle, indent=1)
    return path


def _claim_folder(out: str) -> None:
    """Use ``out`` if it is new, empty, or an earlier demo's output; never anything else."""
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, MARKER)):
            raise UADError(f"{out}: exists and was not written by `uad demo`; choose another --out")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, MARKER), "w").close()
