"""Neuron Atlas services: one folder per service, stage logic in plain modules."""
