"""The synthetic cohort: subjects derived from the MNI152 template shipped with
nilearn, with known lesions. It exercises the pipeline; it is not real data."""

from uadcore.synth.cohort import synthesize_cohort
from uadcore.synth.lesions import DEFAULT_KINDS as DEFAULT_LESION_KINDS
from uadcore.synth.lesions import KINDS as LESION_KINDS
from uadcore.synth.subject import make_subject
from uadcore.preprocess.template import load_template

__all__ = ["DEFAULT_LESION_KINDS", "LESION_KINDS", "load_template", "make_subject", "synthesize_cohort"]
