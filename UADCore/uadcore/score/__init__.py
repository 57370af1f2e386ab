"""Scores and maps of trained models."""
