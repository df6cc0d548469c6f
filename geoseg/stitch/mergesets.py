"""Union-find sets that know when they are final, so a stitcher can let go of an object as soon as it is whole.

Nodes are (tile id, local label) pairs, or ("key", prompt key). Each set carries its items (fragments), a count of
*open references* (its labels on a tile edge whose neighbour has not finished) and whether it is *pinned* (holds a
prompt key, so any later tile may still join it). A set with no open reference and no pin can never grow again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnionFind:
    """Disjoint sets over hashable items, with path halving and union by size."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}
        self.size: dict[Any, int] = {}

    def find(self, item: Any) -> Any:
        parent = self.parent.setdefault(item, item)
        self.size.setdefault(item, 1)
        while parent != item:
            grand = self.parent[parent]
            self.parent[item] = grand
            item, parent = parent, grand
        return item

    def union(self, a: Any, b: Any) -> tuple[Any, Any] | None:
        """Join the sets of ``a`` and ``b``; returns (surviving root, absorbed root), None if already one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra, rb

    def forget(self, items: Iterable[Any]) -> None:
        """Drop the items of a whole set (none may be referenced again)."""
        for item in items:
            del self.parent[item]
            del self.size[item]


@dataclass
class _Set(Generic[T]):
    nodes: list[Any]
    items: list[T] = field(default_factory=list)
    open_refs: int = 0
    pinned: bool = False


class MergeSets(Generic[T]):
    """Sets of nodes with items, open references and pins (module docstring)."""

    def __init__(self) -> None:
        self._uf = UnionFind()
        self._sets: dict[Any, _Set[T]] = {}
        self.held = 0
        """Items in sets not popped yet."""

    def __contains__(self, node: Any) -> bool:
        return node in self._uf.parent

    def __len__(self) -> int:
        return len(self._sets)

    def _set(self, node: Any) -> _Set[T]:
        if node not in self._uf.parent:  # a new node: a set of its own
            self._uf.parent[node], self._uf.size[node] = node, 1
            group = self._sets[node] = _Set([node])
            return group
        return self._sets[self._uf.find(node)]

    def find(self, node: Any) -> Any:
        """The root of ``node``'s set (a new node is a set of its own)."""
        self._set(node)
        return self._uf.find(node)

    def add_item(self, node: Any, item: T) -> None:
        self._set(node).items.append(item)
        self.held += 1

    def pin(self, node: Any) -> None:
        self._set(node).pinned = True

    def refer(self, node: Any, delta: int) -> None:
        """Add ``delta`` open references to ``node``'s set."""
        self._set(node).open_refs += delta

    def union(self, a: Any, b: Any) -> None:
        self._set(a), self._set(b)
        joined = self._uf.union(a, b)
        if joined is None:
            return
        keep, gone = self._sets[joined[0]], self._sets.pop(joined[1])
        keep.nodes += gone.nodes
        keep.items += gone.items
        keep.open_refs += gone.open_refs
        keep.pinned |= gone.pinned

    def final_roots(self, nodes: Iterable[Any]) -> list[Any]:
        """The distinct roots of ``nodes`` whose sets can no longer grow."""
        roots = {self._uf.find(node) for node in nodes if node in self._uf.parent}
        return [r for r in roots if self._sets[r].open_refs == 0 and not self._sets[r].pinned]

    def roots(self) -> list[Any]:
        return list(self._sets)

    def pop(self, root: Any) -> list[T]:
        """Remove a whole set; returns its items."""
        group = self._sets.pop(root)
        self._uf.forget(group.nodes)
        self.held -= len(group.items)
        return group.items
