"""The impurity experiment of Behrendt et al. (their Fig. 2) on the synthetic cohort,
with the curation rules UAD offers side by side.

Training sets of the same healthy scans with 0, 3, 6 and 12 % unhealthy scans
injected (lesions of one kind: tumours by default, small masses of 5-15 mm or
white-matter lesions on request); for each, a baseline without outlier removal and
runs with outlier removal for every gamma and removal score (the paper's training
loss, the calibrated map's top 1 %, and the out-of-fold audit with `normative`
before training); each run's sample AUROC on one independent test set (with the
run's calibrated map and its chosen sample score), the fractions of healthy and of
unhealthy training scans it removed, and for the audit rule how many injected
scans its ranking put in the top k (k: their number). With ``audit_models``, an
out-of-fold audit of each contaminated training set by each of those models
(`uad audit`: a ranking, no final model): the injected scans in its top k and the
healthy scans that top k would remove. Every run holds out the same
`healthy_validation` healthy scans for calibration, on top of `healthy_train`.

Output folder: cohort/, runs/<level>-<variant>/, audits/, results.csv,
results.json, results.md and impurity.png.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field

from uadcore.errors import UADError
from uadcore.io.run_files import AUDIT_NAME
from uadcore.score.out_of_fold import found_in_top_k, read_audit_csv


@dataclass(frozen=True)
class ImpurityPlan:
    levels_percent: tuple = (0, 3, 6, 12)
    gammas: tuple = (1.3, 1.4, 1.5)
    removal_scores: tuple = ("loss", "rec-top1", "audit")
    lesion_kind: str = "tumour"  # of the injected and the unhealthy test scans (`uadcore.synth.LESION_KINDS`)
    audit_models: tuple = ()  # models of out-of-fold audits of each contaminated training set (rankings only)
    healthy_train: int = 48
    healthy_validation: int = 8  # held out of every run for calibration (>= MIN_SCANS to calibrate)
    healthy_test: int = 20
    unhealthy_test: int = 20
    # the paper's protocol: removal from the first removal epoch on (`uad train`'s default waits for the loss to
    # settle, which in 30 epochs with a re-initialisation at 10 came only at epoch 30: removal then changes nothing)
    train: dict = field(default_factory=lambda: ImpurityPlan.train_default())
    model_params: dict = field(default_factory=lambda: {"channels": [8, 16, 32, 64], "latent": 128})

    @staticmethod
    def train_default() -> dict:
        """The runs' settings over `uad train`'s: small, 30 epochs, removal from epoch 5 on."""
        return {"epochs": 30, "outlier_every": 5, "reinit_at": [10], "batch_size": 4, "removal_start": "paper"}

    def injected(self, level_percent: float) -> int:
        """Unhealthy scans that make ``level_percent`` % of the training set."""
        share = level_percent / 100.0
        return int(round(share * self.healthy_train / (1.0 - share)))

    def most_injected(self) -> int:
        """Unhealthy scans of the most contaminated training set (the first of the cohort's unhealthy subjects)."""
        return max(self.injected(level) for level in self.levels_percent)

    def cohort_size(self) -> tuple[int, int]:
        """(healthy, unhealthy) subjects of the experiment's cohort: every training set's and the test set's."""
        return self.healthy_train + self.healthy_validation + self.healthy_test, self.most_injected() + self.unhealthy_test

    def split(self, entries: list, level_percent: float) -> tuple[list, list]:
        """(the training set at ``level_percent`` % impurity: the healthy training and validation
        scans with the first injected ones; the test set) of the cohort's ``entries``."""
        healthy = [e for e in entries if e.label == "healthy"]
        unhealthy = [e for e in entries if e.label == "unhealthy"]
        n_healthy = self.healthy_train + self.healthy_validation
        return healthy[:n_healthy] + unhealthy[: self.injected(level_percent)], healthy[n_healthy:] + unhealthy[self.most_injected():]


def run_impurity(out: str, plan: ImpurityPlan = ImpurityPlan(), seed: int = 0, device: str = "auto", progress: bool = True) -> dict:
    from uadcore.evaluate.run import evaluate
    from uadcore.io import read_manifest, write_manifest
    from uadcore.score.scorer import Scorer
    from uadcore.synth import synthesize_cohort
    from uadcore.train import Events, TrainConfig, train

    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out):
        raise UADError(f"{out}: exists and is not empty; choose a new folder for the experiment")
    healthy, unhealthy = plan.cohort_size()
    manifest = synthesize_cohort(os.path.join(out, "cohort"), healthy=healthy, unhealthy=unhealthy, seed=seed,
                                 progress=progress, lesion_kinds=(plan.lesion_kind,))
    entries = read_manifest(manifest)
    test_manifest = write_manifest(plan.split(entries, 0)[1], os.path.join(out, "test.csv"))
    # the engine holds out this share of the scans not labelled unhealthy: exactly healthy_validation of them
    val_fraction = plan.healthy_validation / (plan.healthy_train + plan.healthy_validation)

    rows = []
    for level in plan.levels_percent:
        n_injected = plan.injected(level)
        train_manifest = write_manifest(plan.split(entries, level)[0], os.path.join(out, f"train-{level}pct.csv"))
        variants = [("baseline", False, plan.gammas[0], "loss")] + [
            (f"{'' if score == 'loss' else score + '-'}gamma{g}", True, g, score) for score in plan.removal_scores for g in plan.gammas]
        for name, removal, gamma, removal_score in variants:
            run_dir = os.path.join(out, "runs", f"{level}pct-{name}")
            config = TrainConfig.from_dict({"data": train_manifest, "model_params": dict(plan.model_params), "seed": seed,
                                            "device": device, "outlier_removal": removal, "gamma": gamma,
                                            "removal_score": removal_score, "val_fraction": val_fraction, **plan.train})
            summary = train(config, run_dir, events=Events(progress=progress))
            report = evaluate(Scorer(run_dir, device=device), read_manifest(test_manifest), progress=progress)
            removed_unhealthy = summary["removed_unhealthy"]
            ranking = os.path.join(run_dir, AUDIT_NAME)
            rows.append({
                "impurity_percent": level, "injected": n_injected, "variant": name, "gamma": gamma if removal else None,
                "removal_score": removal_score if removal else None, "sample_score": report.sample_score,
                "sample_auroc": report.sample_auroc,
                "removed_healthy_fraction": (summary["removed"] - removed_unhealthy) / plan.healthy_train,
                "removed_unhealthy_fraction": removed_unhealthy / n_injected if n_injected else None,
                "injected_in_top_k": _injected_in_top_k(read_audit_csv(ranking)) if os.path.isfile(ranking) else None,
            })
        for model in plan.audit_models if n_injected else ():
            rows.append(_audit_row(out, level, n_injected, model, train_manifest, plan, seed, device, progress))
    return _write_results(out, plan, seed, rows)


def _injected_in_top_k(ranking: list[dict]) -> float | None:
    """The share of the scans labelled unhealthy that a ranking (audit.csv rows, the
    most suspicious first) puts in its top k, k their number (None without any)."""
    found = found_in_top_k(ranking)
    return None if found is None else found[0] / found[1]


def _audit_row(out: str, level, n_injected: int, model: str, train_manifest: str, plan: ImpurityPlan, seed: int, device,
               progress: bool) -> dict:
    """An out-of-fold audit of one contaminated training set by ``model`` (its
    validation scans included: all of the manifest): a ranking, no final model."""
    from uadcore.audit import AuditPlan, run_audit

    settings = () if model == "normative" else (("epochs", plan.train["epochs"]), ("batch_size", plan.train["batch_size"]))
    audit = run_audit(train_manifest, os.path.join(out, "audits", f"{level}pct-{model}"),
                      AuditPlan(model, seed=seed, size=None if model == "normative" else "small", train=settings),
                      device=device, progress=progress)
    healthy = audit["scans"] - audit["problems"] - audit["unhealthy"]
    return {"impurity_percent": level, "injected": n_injected, "variant": f"audit-{model} (ranking)", "gamma": None,
            "removal_score": None, "sample_score": None, "sample_auroc": None,
            "removed_healthy_fraction": audit["healthy_in_top_k"] / healthy, "removed_unhealthy_fraction": None,
            "injected_in_top_k": audit["unhealthy_in_top_k"] / audit["unhealthy"]}


def _write_results(out: str, plan: ImpurityPlan, seed: int, rows: list[dict]) -> dict:
    with open(os.path.join(out, "results.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = {"plan": asdict(plan), "seed": seed, "rows": rows}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    shown = lambda value, form=".2f": "-" if value is None else format(value, form)  # noqa: E731
    lines = [f"Injected lesions: {plan.lesion_kind}.", "",
             "| impurity | injected | variant | sample score | sample AUROC | removed healthy | removed unhealthy | "
             "injected in top k |", "|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['impurity_percent']} % | {r['injected']} | {r['variant']} | {r['sample_score'] or '-'} | "
                     f"{shown(r['sample_auroc'], '.3f')} | {shown(r['removed_healthy_fraction'])} | "
                     f"{shown(r['removed_unhealthy_fraction'])} | {shown(r['injected_in_top_k'])} |")
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    result["table"] = os.path.join(out, "results.md")
    result["plot"] = _plot(rows, plan, os.path.join(out, "impurity.png"))
    return result


def _plot(rows, plan, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(plan.levels_percent)
    lowest = min(r["sample_auroc"] for r in rows if r["sample_auroc"] is not None)
    figure, axes = plt.subplots(2, len(levels), figsize=(3.2 * len(levels), 5.5), squeeze=False)
    for column, level in enumerate(levels):
        mine = [r for r in rows if r["impurity_percent"] == level]
        baseline = next(r for r in mine if r["variant"] == "baseline")
        top, bottom = axes[0][column], axes[1][column]
        for score, colour in zip(plan.removal_scores, ("tab:blue", "tab:orange", "tab:green", "tab:purple")):
            removal = [r for r in mine if r["removal_score"] == score]
            gammas = [r["gamma"] for r in removal]
            top.plot(gammas, [r["sample_auroc"] for r in removal], "o-", color=colour, label=f"removal by {score}")
            bottom.plot(gammas, [r["removed_healthy_fraction"] for r in removal], "o-", color=colour, label=f"healthy ({score})")
            if level:
                bottom.plot(gammas, [r["removed_unhealthy_fraction"] for r in removal], "s--", color=colour,
                            label=f"unhealthy ({score})")
        for marker, ranking in zip("*Pd", (r for r in mine if r["variant"].endswith("(ranking)"))):
            # an audit's ranking, cut at k: the injected it finds (filled) and the healthy it would remove (open)
            bottom.plot([min(plan.gammas)], [ranking["injected_in_top_k"]], marker, color="black", markersize=9,
                        label=f"{ranking['variant']}: injected in top k")
            bottom.plot([min(plan.gammas)], [ranking["removed_healthy_fraction"]], marker, color="black", markersize=9,
                        fillstyle="none", label=f"{ranking['variant']}: healthy in top k")
        top.axhline(baseline["sample_auroc"], color="gray", linestyle="--", label="baseline")
        top.set_title(f"train {level} % unhealthy ({plan.lesion_kind})", fontsize=9)
        top.set_ylabel("sample AUROC" if column == 0 else "")
        top.set_ylim(min(0.45, lowest - 0.02), 1.0)  # a fixed scale: small differences look small
        bottom.set_xlabel("gamma")
        bottom.set_ylabel("fraction removed" if column == 0 else "")
        bottom.set_ylim(-0.05, 1.05)
    shown = {}  # one legend for all panels, below them: inside, it hid the points
    for axis in (axes[0][0], axes[1][-1]):
        for handle, label in zip(*axis.get_legend_handles_labels()):
            shown.setdefault(label, handle)
    figure.legend(list(shown.values()), list(shown), loc="lower center", ncol=3, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.06 + 0.025 * ((len(shown) + 2) // 3), 1, 1))
    figure.savefig(path, dpi=90, bbox_inches="tight")  # with one impurity level the legend is wider than the panels
    plt.close(figure)
    return path
