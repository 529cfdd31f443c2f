"""`groups.json`: the neuron groups of every cluster, written once by the groups stage and read
by every later stage (labelling's hierarchy, uncertainty)."""

from __future__ import annotations

from pydantic import Field

from neuron_atlas_client.contracts.base import Contract, Count


class Layer(Contract):
    name: str
    channels: int = Field(ge=1)


class ClusterGroup(Contract):
    group: list[int] = Field(description="Global neuron indices of the cluster's group, ascending.")
    difference: list[int] = Field(description="In the group and not in the parent's group.")
    counts: list[Count] = Field(description="Images in which each group neuron is active, as in `group`.")


class GroupsLevel(Contract):
    sizes: list[int] = Field(description="Images per cluster.")
    clusters: list[ClusterGroup]


class Groups(Contract):
    weights: str = Field(description="Where the target model's weights came from, in plain words.")
    layers: list[Layer] = Field(description="Selected layers, side by side in the neuron axis.")
    levels: list[GroupsLevel] = Field(description="Level 1 (finest) first.")

    def neuron_names(self) -> list[tuple[str, int]]:
        """(layer, channel) of every neuron, in global index order."""
        return [(layer.name, c) for layer in self.layers for c in range(layer.channels)]
