"""The GPU benchmark script, run as a process in its CPU test mode (`--quick`): every
part runs and writes its JSON and markdown; its numbers mean nothing on a CPU."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_the_gpu_benchmark_runs_end_to_end_on_the_cpu(tmp_path, cohort):
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--quick", "--cohort", cohort, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    assert result["limits"]["matmul_tflops"] > 0 and result["limits"]["copy_gb_per_s"] > 0
    assert {r["model"] for r in result["training"]} == {"ae3d", "vae3d"}
    assert all(r["flops_per_step"] > 0 and 0 < r["share_of_matmul"] for r in result["training"])
    assert set(result["protocol"]) == {"paper-size AE3D", "CPU configuration (small AE3D)"}
    assert all(0 <= r["sample_auroc"] <= 1 for r in result["protocol"].values())
    assert [r["map"] for r in result["scoring"]] == ["rec", "kl-grad"] and all(r["from_files_scans_per_s"] > 0 for r in result["scoring"])
    assert result["extrapolated"]["training_minutes"] > 0
    assert "share of matmul" in (out / "gpu.md").read_text()


@pytest.mark.slow
def test_the_smoke_check_runs_every_check_on_the_cpu(tmp_path):
    # the same script a lent GPU runs first (`--device cuda`), here on the CPU: every
    # model trained, evaluated on every map kind and scored; a killed run resumed; torchrun
    out = tmp_path / "smoke"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    checks = [json.loads(line) for line in (out / "smoke.jsonl").read_text().splitlines()]
    assert done.returncode == 0, [c for c in checks if not c["ok"]] or done.stderr[-3000:]
    assert done.stdout.splitlines() == (out / "smoke.jsonl").read_text().splitlines()  # one JSON line a check
    from uadcore.models import MODELS

    names = [c["check"] for c in checks]
    for model in MODELS:
        assert {f"train {model}", f"evaluate {model} (every map kind)", f"score {model}"} <= set(names)
    assert names[2:4] == ["resume after SIGKILL", "torchrun"] and all(c["ok"] for c in checks)
    evaluated = {c["check"].split()[1]: c["maps"] for c in checks if c["check"].startswith("evaluate")}
    assert all(set(maps) == set(MODELS[m].maps) for m, maps in evaluated.items())
    assert sum(c.get("removed", 0) for c in checks if c["check"].startswith("train")) > 0  # removal ran to its end
    assert next(c for c in checks if c["check"] == "torchrun")["ranks"] == 2
