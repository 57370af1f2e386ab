"""The synthetic cohort and split the accuracy benchmarks share, so their tables
compare: seed 0, ``healthy_train`` healthy training scans, and an unseen test set
of 16 healthy and 24 unhealthy scans (tumour, white-matter lesions, cavity in turn)."""

from __future__ import annotations

import os

from uadcore.io import read_manifest, write_manifest
from uadcore.synth import synthesize_cohort


def train_and_test(out: str, healthy_train: int) -> tuple[str, str]:
    """Synthesise the cohort into ``out``/cohort; returns (train manifest, test manifest)."""
    entries = read_manifest(synthesize_cohort(os.path.join(out, "cohort"), healthy=healthy_train + 16, unhealthy=24, seed=0))
    healthy = [e for e in entries if e.label == "healthy"]
    train_manifest = write_manifest(healthy[:healthy_train], os.path.join(out, "train.csv"))
    test_manifest = write_manifest(healthy[healthy_train:] + [e for e in entries if e.label == "unhealthy"], os.path.join(out, "test.csv"))
    return train_manifest, test_manifest
