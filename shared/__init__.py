"""Neuron Atlas shared library: options, errors, storage, schemas; imported by every service."""
