"""Shared test set-up: headless Qt, GPU tests skipped without CUDA, and the
volumes and cohorts the tests read."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# prepared scans are cached on disk: keep the tests' cache out of the user's home
_CACHE = tempfile.mkdtemp(prefix="uad-test-cache-")
os.environ["UAD_CACHE_DIR"] = os.path.join(_CACHE, "prepared")


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_CACHE, ignore_errors=True)
sys.path.insert(0, os.path.dirname(__file__))  # the `volumes` helpers


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """A small synthetic cohort: 3 healthy and 3 unhealthy subjects (one of each
    lesion kind). Returns the manifest path; tests must not write into it."""
    from uadcore.synth import synthesize_cohort

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    return synthesize_cohort(str(out), healthy=3, unhealthy=3, seed=7, workers=2, progress=False)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """9 healthy and 2 unhealthy synthetic scans (a manifest's entries): enough
    healthy ones to hold out 5 for calibration. Tests must not write into it."""
    from uadcore.io import read_manifest
    from uadcore.synth import synthesize_cohort

    base = tmp_path_factory.mktemp("small-cohort")
    return read_manifest(synthesize_cohort(str(base / "cohort"), healthy=9, unhealthy=2, seed=5, workers=2, progress=False))
