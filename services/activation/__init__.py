"""The activation service: target models, their hooks and active sets, neuron groups, model imports."""
