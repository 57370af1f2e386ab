"""Reviewing a training set: every scan ranked, a decision for each, and a curated
manifest with the decisions beside it.

A review starts from a run folder or from the folder of a `uad audit`:

- an audit folder: every audited scan in the audit's order (the most suspicious
  first), with its out-of-fold score, its map file (``uad audit --maps``) and
  where the map peaks; each starts as "keep";
- a run folder: every training scan. A run that removed by the audit
  (``removal_score audit``) ranks them all by it; otherwise the scans outlier
  removal took out come first, by their score over the mean, the others after them,
  unranked. Removed scans (and those that could not be prepared) start as
  "exclude", the others as "keep".

`decide` records a decision with its reason, who made it and when. `export`
writes the scans kept (a run's validation scans too: never removed, so a curate-
and-retrain round does not shrink the data) as a manifest, and every row with its
decision as ``<manifest>-decisions.csv`` beside it (`DECISION_COLUMNS`).

A row: a dict with the keys of `DECISION_COLUMNS` (rank and score None where there
are none) and ``map`` (a map file of the scan, or ""), ``peak_ras_mm`` (a list, or
None), ``run`` (the run whose model maps the scan without having seen it where
there is one: an audit's fold run, or the run itself) and, for an audit's rows,
``threshold`` (the map value above which the audit outlines a scan's top region).
"""

from __future__ import annotations

import csv
import datetime
import getpass
import json
import os

from uadcore.errors import UADError
from uadcore.io import ScanEntry, read_manifest, write_manifest
from uadcore.io.atomic import atomic_path
from uadcore.io.run_files import AUDIT_PLAN, AUDITED_SCANS, RunFiles

DECISIONS = ("keep", "exclude")
DECISION_COLUMNS = ("path", "label", "rank", "score", "scored_by", "removed", "decision", "reason", "reviewer", "decided_at")


def decisions_path(manifest: str) -> str:
    """Where the decisions behind a curated ``manifest`` go: beside it."""
    stem = manifest[: -len(".csv")] if manifest.lower().endswith(".csv") else manifest
    return f"{stem}-decisions.csv"


def load_review(folder: str) -> list[dict]:
    """The rows of a review of ``folder`` (a run or an audit folder), ranked."""
    files = RunFiles(os.path.abspath(folder))
    if os.path.isfile(files.checkpoint):
        return _run_rows(files)
    if os.path.isfile(files.audit):
        return _audit_rows(files)
    raise UADError(f"{folder}: neither a run folder (no {os.path.basename(files.checkpoint)}) nor an audit folder "
                   f"(no {os.path.basename(files.audit)})")


def _row(path: str, label: str, rank=None, score=None, scored_by: str = "", removed: str = "", decision: str = "keep",
         reason: str = "", map_file: str = "", peak=None, run: str = "") -> dict:
    return {"path": path, "label": label or "", "rank": rank, "score": score, "scored_by": scored_by, "removed": removed,
            "decision": decision, "reason": reason, "reviewer": "", "decided_at": "", "map": map_file,
            "peak_ras_mm": peak, "run": run}


def _audit_rows(files: RunFiles) -> list[dict]:
    from uadcore.score.out_of_fold import read_audit_csv

    about = _audit_plan(files)
    threshold = about.get("voxel_thresholds", {}).get(about.get("region_fpr"))  # the maps shown above it
    rows = []
    for row in read_audit_csv(files.audit):
        if row["rank"] is None:  # could not be prepared: nothing to train on either way
            rows.append(_row(row["path"], row["label"], decision="exclude", reason=row.get("problem", "")))
        else:
            rows.append({**_row(row["path"], row["label"], row["rank"], row["score"], "audit", map_file=row.get("map", ""),
                                peak=row["peak_ras_mm"], run=row.get("run", "")), "threshold": threshold,
                         "map_kind": about.get("map")})  # the kind its run maps it with (None: the run's default)
    return rows


def _audit_plan(files: RunFiles) -> dict:
    """audit.json of an audit folder ({} for an audit by an older UAD)."""
    path = os.path.join(files.folder, AUDIT_PLAN)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _run_rows(files: RunFiles) -> list[dict]:
    from uadcore.score.out_of_fold import read_audit_csv
    from uadcore.io.checkpoint import load_run
    from uadcore.train.outliers import was_removed

    state = load_run(files.folder)
    gone = {row["path"]: row for row in state["audit"]}

    def removal(path: str) -> tuple[str, str, str]:
        """(removed: when, decision, reason) of a training scan."""
        row = gone.get(path)
        if row is None:
            return "", "keep", ""
        if not was_removed(row):
            return "not preparable", "exclude", row.get("reason", "")
        when = "before training" if row.get("score") == "audit" else f"epoch {int(float(row['epoch']))}"
        return when, "exclude", f"removed by outlier removal ({row.get('score') or 'loss'})"

    if os.path.isfile(files.audit):  # removal by the audit: every scan has a score
        ranked = [_row(r["path"], r["label"], r["rank"], r["score"], "audit", *removal(r["path"]), run=files.folder)
                  for r in read_audit_csv(files.audit)]
    else:  # the removed scans first, by their score over the mean
        removed_rows = sorted((r for r in state["audit"] if was_removed(r)), key=lambda r: -float(r["loss_over_mean"]))
        ranked = [_row(r["path"], r.get("label"), rank, float(r["loss_over_mean"]), f"{r.get('score') or 'loss'} / mean",
                       *removal(r["path"]), run=files.folder) for rank, r in enumerate(removed_rows, start=1)]
    seen = {r["path"] for r in ranked}
    return ranked + [_row(e["path"], e.get("label"), None, None, "", *removal(e["path"]), run=files.folder)
                     for e in state["train_entries"] if e["path"] not in seen]


def decide(row: dict, decision: str, reason: str = "", reviewer: str | None = None) -> dict:
    """Record ``decision`` ("keep" or "exclude") for ``row`` with its reason, the
    reviewer (default: the user logged in) and the time (UTC); returns the row."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)} (got {decision})")
    row.update(decision=decision, reason=reason.strip(), reviewer=reviewer or _user(),
               decided_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return row


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        return "unknown"


def export(folder: str, rows: list[dict], manifest: str, force: bool = False) -> tuple[str, str]:
    """The curated manifest of the scans of ``folder``'s review kept in ``rows`` (and
    a run's validation scans), and the decisions beside it (`decisions_path`).
    Never over an input or a file UAD did not write as such. Returns both paths."""
    from uadcore.io.outputs import check_output, data_folders

    entries, validation, data = _scans(folder)
    decided = {row["path"]: row["decision"] for row in rows}
    kept = [e for e in entries if decided.get(e.path, "keep") == "keep"] + validation
    if not kept:
        raise UADError(f"{manifest}: every scan is excluded; keep at least one")
    inputs = [data, *(e.path for e in entries + validation)]
    manifest = check_output(manifest, inputs, data_folders(entries + validation), force=force, kind="manifest")
    decisions = check_output(decisions_path(manifest), inputs, data_folders(entries + validation), force=force,
                             kind="decisions")
    write_manifest(kept, manifest)
    with atomic_path(decisions) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=DECISION_COLUMNS)
        writer.writeheader()
        writer.writerows({key: "" if row.get(key) is None else row.get(key) for key in DECISION_COLUMNS} for row in rows)
    return manifest, decisions


def _scans(folder: str) -> tuple[list[ScanEntry], list[ScanEntry], str]:
    """(the scans reviewed, a run's validation scans, the data they came from)."""
    files = RunFiles(os.path.abspath(folder))
    if os.path.isfile(files.checkpoint):
        from uadcore.io.checkpoint import load_run

        state = load_run(files.folder)
        return ([ScanEntry(**e) for e in state["train_entries"]],
                [ScanEntry(**e) for e in state.get("validation", {}).get("entries", [])], state["config"].get("data", ""))
    scans, about = os.path.join(files.folder, AUDITED_SCANS), _audit_plan(files)
    if not os.path.isfile(scans) or "data" not in about:
        raise UADError(f"{folder}: no {AUDITED_SCANS} or {AUDIT_PLAN} (an audit by an older UAD); audit the scans again "
                       "to export from it")
    return read_manifest(scans), [], about["data"]
