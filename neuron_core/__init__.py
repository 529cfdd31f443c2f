"""The neuron core: how every model-reading stage sees a target model's neurons.

Layer discovery (`layers`), forward hooks that pool inside the hook (`hooks`), per-image active
sets and their stored shards (`active_sets`), the group rules up the hierarchy and groups.json
(`groups`), and the one target-model loader with its one bounded cache (`target_model`).
The activation and uncertainty services and the embedded runner use it; it imports torch, so the
gateway never imports it.
"""
