"""Run a model from the output of its first read layer instead of from the image.

Ablations and keep-only variants change the model only at its read layers, so everything before
the first of them computes the same thing for every variant of an image. Computing that prefix
once per image and each variant from there saves, for ResNet18 read at `layer1`..`layer4`, the
stem and `layer1`: about a third of each variant's work.

The split comes from a `torch.fx` trace with the read layers kept whole. It is used only when
the rest of the graph depends on the image through the first read layer alone (true of ResNets,
VGG, ConvNeXt and most classifiers); otherwise, or when the model does not trace, callers run
the whole model as before. The suffix calls the same module objects as the model, so forward
hooks on the later read layers fire in it as they do in a full pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from a hook once the first read layer has produced its output."""


class _ReadLayersWhole(fx.Tracer):
    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        self.read_layers = set(layers)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.read_layers or super().is_leaf_module(m, module_qualified_name)


@dataclass
class ReadLayerStart:
    """`prefix(images)` is the first read layer's unablated output; `suffix(that)` the logits."""

    module: nn.Module
    first_layer: str
    suffix: nn.Module

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def capture(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            captured.append(output)
            raise _StopForward

        # Registered last, so it sees the output after any other hook on this layer; callers
        # leave their ablation hooks inactive here.
        handle = dict(self.module.named_modules())[self.first_layer].register_forward_hook(capture)
        try:
            self.module(images)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:  # the layer did not run: the split was wrong, never guess
            raise RuntimeError(f"read layer {self.first_layer!r} did not run")
        return captured[0]


def split_at_first_read_layer(module: nn.Module, layers: Sequence[str]) -> ReadLayerStart | None:
    """The split of `module` at the first of `layers` to run, or None where there is none."""
    try:
        graph = _ReadLayersWhole(layers).trace(module)
    except Exception as exc:  # any model fx cannot trace runs whole, as before
        log.debug("no read-layer start for %s: %s", type(module).__name__, exc)
        return None
    nodes = list(graph.nodes)
    wanted = set(layers)
    cut_index = next(
        (i for i, node in enumerate(nodes) if node.op == "call_module" and node.target in wanted), None
    )
    if cut_index is None:
        return None
    cut = nodes[cut_index]
    before = set(nodes[:cut_index])
    after = nodes[cut_index + 1 :]
    for node in after:
        for used in node.all_input_nodes:
            if used in before and used.op != "get_attr":
                return None  # the rest also sees the image by another path (e.g. a skip from the stem)
    suffix_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: suffix_graph.placeholder("first_read_layer_output")}
    for node in nodes[:cut_index]:
        if node.op == "get_attr":
            env[node] = suffix_graph.node_copy(node, lambda n: env[n])
    for node in after:
        env[node] = suffix_graph.node_copy(node, lambda n: env[n])
    suffix = fx.GraphModule(module, suffix_graph)
    return ReadLayerStart(module, str(cut.target), suffix)
