"""Run a model from the output of its first read layer instead of from the image.

Ablations and keep-only variants change the model only at its read layers, so everything before
the first of them computes the same thing for every variant of an image. Computing that prefix
once per image and each variant from there saves, for ResNet18 read at `layer1`..`layer4`, the
stem and `layer1`: about a third of each variant's work.

Dropout injected on the *input* of each read layer changes nothing before the first of them
either: `split_at_first_read_layer(..., at_input=True)` starts those passes from that input, saving the stem
(a quarter to a third of a bfloat16 ResNet18 pass on a CPU).

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

from neuron_core.instrumented import InstrumentedModel

log = logging.getLogger(__name__)


class _ReadLayersWhole(fx.Tracer):
    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        self.read_layers = set(layers)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.read_layers or super().is_leaf_module(m, module_qualified_name)


@dataclass
class ReadLayerStart:
    """`prefix(images)` is the first read layer's unablated output, or with `at_input` its input;
    `suffix(that)` runs the rest of the model (with `at_input` that layer too, its hooks and
    pre-hooks firing) to the logits."""

    module: nn.Module
    first_layer: str
    suffix: nn.Module
    at_input: bool = False

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        # The input is taken before any other pre-hook (injected dropout) sees it; the output
        # after every other hook on the layer: callers leave their ablation masks inactive here.
        start = InstrumentedModel(self.module).stop_at(self.first_layer, images, at_input=self.at_input)
        if start is None:  # the layer did not run: the split was wrong, never guess
            raise RuntimeError(f"read layer {self.first_layer!r} did not run on a tensor")
        return start


def split_at_first_read_layer(
    module: nn.Module, layers: Sequence[str], at_input: bool = False
) -> ReadLayerStart | None:
    """The split of `module` after the first of `layers` to run (`at_input`: before it), or None
    where there is none."""
    split = _split(module, layers, at_input)
    return ReadLayerStart(module, *split, at_input=at_input) if split else None


def _split(module: nn.Module, layers: Sequence[str], at_input: bool) -> tuple[str, fx.GraphModule] | None:
    """(first read layer, the graph from its output, or from its one input, to the logits)."""
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
    if at_input:
        if len(cut.all_input_nodes) != 1 or cut.kwargs:
            return None
        entry, before, rest = cut.all_input_nodes[0], set(nodes[:cut_index]), nodes[cut_index:]
    else:
        entry, before, rest = cut, set(nodes[:cut_index]), nodes[cut_index + 1 :]
    for node in rest:
        for used in node.all_input_nodes:
            if used in before and used is not entry and used.op != "get_attr":
                return None  # the rest also sees the image by another path (e.g. a skip from the stem)
    suffix_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {entry: suffix_graph.placeholder("start")}
    for node in nodes[:cut_index]:
        if node.op == "get_attr":
            env[node] = suffix_graph.node_copy(node, lambda n: env[n])
    for node in rest:
        env[node] = suffix_graph.node_copy(node, lambda n: env[n])
    return str(cut.target), fx.GraphModule(module, suffix_graph)
