"""Neuron Atlas: the embedded pipeline and the `neuron-atlas` command."""
