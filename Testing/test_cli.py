"""The `uad` command as other tools see it: its help, exit codes and --json."""

import json
import os
import subprocess
import sys

import pytest

from uadcore.cli import main

CONTRACT = ["synth", "train", "score", "evaluate", "outliers", "demo", "gui"]


def uad(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "uadcore", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_contract():
    result = uad("--help")
    assert result.returncode == 0
    for command in CONTRACT + ["check"]:
        assert f"    {command}" in result.stdout


def test_synth_json_is_one_object_on_stdout(tmp_path):
    result = uad("synth", str(tmp_path / "c"), "--healthy", "2", "--unhealthy", "1", "--seed", "4", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON document, nothing else
    assert result.stdout.count("\n") == 1
    assert payload["healthy"] == 2 and payload["unhealthy"] == 1
    assert os.path.isfile(payload["manifest"])


def test_check_json(cohort, capsys):
    assert main(["check", cohort, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n"] == 6 and payload["healthy"] == 3 and payload["with_mask"] == 3
    assert payload["preset"]["name"] == "brain3d-behrendt"
    assert all(scan["model_inputs"] == 1 for scan in payload["scans"])
    # what the brain preparation found, per scan: the synthetic scans are skull-stripped already
    assert all(scan["brain_from"] == "scan" and scan["registration"] > 0.5 and 900 < scan["brain_ml"] < 2600
               for scan in payload["scans"])


def test_progress_in_a_log_is_plain_lines(cohort):
    env = {**os.environ, "UAD_PROGRESS_EVERY": "0"}  # a line at every step, as long work gets every 30 s
    done = subprocess.run([sys.executable, "-m", "uadcore", "check", cohort], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(",")[0] for line in lines if line.startswith("check: ")] == [f"check: {n}/6 scans ({100 * n // 6} %)" for n in range(1, 7)]
    assert "\r" not in done.stderr  # lines of their own, no carriage returns
    # short work in a log writes no progress at all
    quiet = subprocess.run([sys.executable, "-m", "uadcore", "check", cohort], capture_output=True, text=True, timeout=600)
    assert not any(line.startswith("check: ") for line in quiet.stderr.splitlines())


def test_check_slices_counts_the_slices(cohort, capsys):
    assert main(["check", cohort, "--preset", "brain2d-slices", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert all(20 < scan["model_inputs"] <= 56 for scan in payload["scans"])


def test_bad_option_is_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["synth"])
    assert stop.value.code == 2


@pytest.mark.slow
def test_demo_end_to_end_at_a_small_size(tmp_path):
    from uadcore.cli.demo import DemoPlan, run_demo

    plan = DemoPlan(healthy_train=9, injected=1, healthy_test=2, unhealthy_test=2,
                    schedule={"epochs": 2, "outlier_every": 1, "reinit_at": [1], "batch_size": 2, "gamma": 1.4, "checkpoint_every": 1},
                    segmenter_schedule={"epochs": 1, "batch_size": 2})
    for _ in range(2):  # a second run replaces the first demo's folder, nothing else
        result = run_demo(str(tmp_path / "demo"), progress=False, plan=plan)
    assert result["n"] == 4 and 0.0 <= result["sample_auroc"] <= 1.0
    report = open(result["report"]).read()
    assert "sample_auroc" in report and "loss.png" in report
    assert "| metric | small AE3D (rec) | anomseg3d (probability) | normative (abs-z) |" in report
    # every sample score says what it is: "rec" (the paper's) and "rec-mean" are not two rows of "rec"
    assert "| small AE3D (rec) | rec | the paper's: mean reconstruction error of the raw map |" in report
    assert f"| small AE3D (rec) | rec-mean | mean of the {'calibrated' if result['calibrated'] else 'raw'} rec map |" in report
    assert 0.0 <= result["anomseg3d"]["sample_auroc"] <= 1.0
    assert "## Curation: the out-of-fold audit" in report and os.path.isfile(result["audit"]["audit"])
    for written in result["maps"]:
        assert os.path.isfile(written["map"]) and os.path.isfile(written["picture"])
    assert sorted(os.listdir(tmp_path / "demo")) == [".uad-demo", "audit", "cohort", "maps", "pictures", "report.json", "report.md",
                                                     "run", "run-anomseg3d", "run-normative", "test.csv", "train.csv"]


def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert os.listdir(tmp_path) == ["precious.txt"]
