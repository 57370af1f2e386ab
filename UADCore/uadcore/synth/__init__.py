"""The synthetic cohort: subjects derived from the MNI152 template shipped with
nilearn, with known lesions. It exercises the pipeline; it is not real data.

Its names load on first use (PEP 562): `uadcore.synth.anomalies` (what the anomaly
segmenter trains on, loaded with the model registry) comes without the cohort's
scipy and nilearn."""

import importlib

_WHERE = {"synthesize_cohort": ("uadcore.synth.cohort", "synthesize_cohort"),
          "DEFAULT_LESION_KINDS": ("uadcore.synth.lesions", "DEFAULT_KINDS"),
          "LESION_KINDS": ("uadcore.synth.lesions", "KINDS"),
          "make_subject": ("uadcore.synth.subject", "make_subject"),
          "load_template": ("uadcore.preprocess.template", "load_template")}

__all__ = ["DEFAULT_LESION_KINDS", "LESION_KINDS", "load_template", "make_subject", "synthesize_cohort"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'uadcore.synth' has no attribute '{name}'")
    module, attribute = _WHERE[name]
    return getattr(importlib.import_module(module), attribute)
