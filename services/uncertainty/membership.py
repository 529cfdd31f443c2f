"""The membership table: every statistic of every (cluster, neuron) membership, one column per
field of `neuron_atlas_client.contracts.uncertainty.Evidence`, and nothing else.

The statistics are computed as (clusters x neurons) arrays per level (stats.py, the bootstrap,
the passes); `MembershipTable.columns` turns one cluster's members into the columns of
uncertainty.json by the Evidence fields' names, so a statistic without a field, or a field
without a statistic, fails at once (`tests/services/uncertainty/test_membership.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuron_atlas_client.contracts.uncertainty import EVIDENCE_COLUMNS
from services.uncertainty.stats import MembershipStats


def _r(values: np.ndarray, digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def _sig(values: np.ndarray) -> list[float]:
    """Four significant digits: p-values far below 1e-6 stay readable instead of rounding to 0."""
    return [float(f"{float(v):.4g}") for v in values]


@dataclass
class MembershipTable:
    """One level's statistics. Optional methods add their arrays to `extra` under their Evidence
    names (inclusion_probability, expected_support, ...); a cluster without them (not in the
    passes' sample) has NaN there and gets null."""

    stats: MembershipStats
    counts: np.ndarray  # (clusters, neurons)
    collection_rate: np.ndarray  # (neurons,)
    can_be_reliable: np.ndarray  # (clusters,) bool: any count of this size could clear min_support
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # (cluster, its members) -> the expected support's (lower, upper), from the passes' sample
    expected_interval: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    def columns(self, k: int, members: np.ndarray) -> dict[str, Any]:
        """The columns of cluster `k`'s members (`members`: their neuron indices)."""
        s = self.stats
        reliable: list[bool | None] = (
            s.reliable[k, members].tolist() if self.can_be_reliable[k] else [None] * members.shape[0]
        )
        columns: dict[str, Any] = {
            "neuron": members.tolist(),
            "count": self.counts[k, members].tolist(),
            "interval": [
                [a, b] for a, b in zip(_r(s.lower[k, members]), _r(s.upper[k, members]), strict=True)
            ],
            "p_value": _sig(s.p_value[k, members]),
            "q_value": _sig(s.q_value[k, members]),
            "selective": s.significant[k, members].tolist(),
            "chance_p_value": _sig(s.chance_p_value[k, members]),
            "chance_q_value": _sig(s.chance_q_value[k, members]),
            "above_chance": s.above_chance[k, members].tolist(),
            "collection_rate": _r(self.collection_rate[members]),
            "generic": (~s.significant[k, members]).tolist(),
            "reliable": reliable,
        }
        for name, values in self.extra.items():
            row = values[k, members]
            columns[name] = (
                None
                if row.size and np.isnan(row).all()
                else _r(row, 4 if name == "inclusion_probability" else 6)
            )
        if self.expected_interval is not None:
            lower, upper = self.expected_interval(k, members)
            if not (lower.size and np.isnan(lower).all()):
                columns["expected_support_interval"] = [
                    [a, b] for a, b in zip(_r(lower), _r(upper), strict=True)
                ]
        for name in EVIDENCE_COLUMNS:
            columns.setdefault(name, None)
        unknown = set(columns) - set(EVIDENCE_COLUMNS) - {"neuron"}
        if unknown:
            raise KeyError(f"statistics without an Evidence field: {sorted(unknown)}")
        return columns
