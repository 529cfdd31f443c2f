"""No import cycles among the product's modules.

The graph is grimp's (import-linter's engine), with every import a module makes: at the top,
inside functions and under `TYPE_CHECKING`. A cycle held apart by a function-level or a
`TYPE_CHECKING` import is still a cycle of meaning (neither module can be read, tested or moved
without the other), so neither kind hides one; the floors are `lint-imports`'s contracts in
pyproject.toml."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("shared", "services", "neuron_core", "neuron_atlas", "neuron_atlas_client")


def import_cycles(packages: Iterable[str]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[frozenset[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                nxt = edges[node][child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:  # back in the parent: pass the child's low link up
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(frozenset(component))
    return cycles


def test_no_import_cycles_in_product_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    packages = [p for p in PRODUCT if importlib.util.find_spec(p) is not None]
    assert {"shared", "services", "neuron_core", "neuron_atlas"} <= set(packages)
    found = [sorted(c) for c in import_cycles(packages)]
    assert found == [], f"import cycles (break them; see docs/architecture.md): {found}"


@pytest.mark.parametrize(
    ("b_body", "cycle"),
    [
        ("import pkg.a\n", True),
        ("def f():\n    from pkg import a\n", True),  # a function-level import is still an edge
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n", True),
        ("import json\n", False),
    ],
)
def test_the_check_finds_a_cycle_however_it_is_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, b_body: str, cycle: bool
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\nX = 1\n")
    (package / "b.py").write_text(b_body)
    (package / "c.py").write_text("from pkg import a\n")  # imports into the cycle, not part of it
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pkg", raising=False)
    expected = [frozenset({"pkg.a", "pkg.b"})] if cycle else []
    assert import_cycles(["pkg"]) == expected
