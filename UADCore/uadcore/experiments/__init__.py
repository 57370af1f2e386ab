"""Experiments that reproduce the papers' protocols on the synthetic cohort."""
