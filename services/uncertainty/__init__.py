"""Uncertainty service: intervals, tests, bootstrap stability, model uncertainty, causal checks."""
