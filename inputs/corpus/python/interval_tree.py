"""interval_tree.py - an augmented AVL tree of closed intervals with overlap and stabbing queries.

Each node stores an interval [low, high] keyed by (low, high, id) and the maximum `high` found in
its subtree. That extra field lets an overlap query skip every subtree whose max_high lies left of
the query, giving O(log n + k) queries for k results. Rotations keep the tree balanced, so inserts
and deletes are O(log n) as well.

Typical uses: finding meetings that clash with a new booking, genome feature lookups, or which
memory mappings contain an address.

Run the tests with:  python3 -m unittest interval_tree.py -v
"""

from __future__ import annotations

import itertools
import random
import unittest
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Tuple

_ids = itertools.count()


@dataclass
class Node:
    low: float
    high: float
    payload: Any
    uid: int = field(default_factory=lambda: next(_ids))
    max_high: float = 0.0
    height: int = 1
    left: Optional["Node"] = None
    right: Optional["Node"] = None

    def key(self) -> Tuple[float, float, int]:
        return (self.low, self.high, self.uid)


def _height(n: Optional[Node]) -> int:
    return n.height if n else 0


def _max_high(n: Optional[Node]) -> float:
    return n.max_high if n else float("-inf")


def _update(n: Node) -> None:
    n.height = 1 + max(_height(n.left), _height(n.right))
    n.max_high = max(n.high, _max_high(n.left), _max_high(n.right))


def _rotate_right(y: Node) -> Node:
    x = y.left
    assert x is not None
    y.left = x.right
    x.right = y
    _update(y)
    _update(x)
    return x


def _rotate_left(x: Node) -> Node:
    y = x.right
    assert y is not None
    x.right = y.left
    y.left = x
    _update(x)
    _update(y)
    return y


def _rebalance(n: Node) -> Node:
    _update(n)
    balance = _height(n.left) - _height(n.right)
    if balance > 1:
        if _height(n.left.left) < _height(n.left.right):
            n.left = _rotate_left(n.left)
        return _rotate_right(n)
    if balance < -1:
        if _height(n.right.right) < _height(n.right.left):
            n.right = _rotate_right(n.right)
        return _rotate_left(n)
    return n


class IntervalTree:
    """A set of closed intervals [low, high] with attached payloads."""

    def __init__(self) -> None:
        self._root: Optional[Node] = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def insert(self, low: float, high: float, payload: Any = None) -> Node:
        if low > high:
            raise ValueError(f"empty interval [{low}, {high}]")
        node = Node(low, high, payload)
        node.max_high = high
        self._root = self._insert(self._root, node)
        self._size += 1
        return node

    def _insert(self, root: Optional[Node], node: Node) -> Node:
        if root is None:
            return node
        if node.key() < root.key():
            root.left = self._insert(root.left, node)
        else:
            root.right = self._insert(root.right, node)
        return _rebalance(root)

    def remove(self, node: Node) -> None:
        """Removes a node previously returned by insert(); KeyError when it is not in the tree."""
        self._root, removed = self._remove(self._root, node.key())
        if not removed:
            raise KeyError(f"interval [{node.low}, {node.high}] is not in the tree")
        self._size -= 1

    def _remove(self, root: Optional[Node], key) -> Tuple[Optional[Node], bool]:
        if root is None:
            return None, False
        if key < root.key():
            root.left, removed = self._remove(root.left, key)
        elif key > root.key():
            root.right, removed = self._remove(root.right, key)
        else:
            removed = True
            if root.left is None:
                return root.right, True
            if root.right is None:
                return root.left, True
            # Replace with the in-order successor, then delete the successor from the right subtree.
            succ = root.right
            while succ.left is not None:
                succ = succ.left
            root.right, _ = self._remove(root.right, succ.key())
            succ.left, succ.right = root.left, root.right
            root = succ
        return _rebalance(root), removed

    def overlapping(self, low: float, high: float) -> List[Node]:
        """All intervals that share at least one point with [low, high], in key order."""
        out: List[Node] = []
        self._collect(self._root, low, high, out)
        return out

    def _collect(self, n: Optional[Node], low: float, high: float, out: List[Node]) -> None:
        if n is None or n.max_high < low:
            return  # nothing in this subtree reaches the query
        self._collect(n.left, low, high, out)
        if n.low <= high and low <= n.high:
            out.append(n)
        if n.low <= high:  # right subtree starts at n.low or later
            self._collect(n.right, low, high, out)

    def stabbing(self, point: float) -> List[Node]:
        """All intervals that contain `point`."""
        return self.overlapping(point, point)

    def __iter__(self) -> Iterator[Node]:
        stack: List[Node] = []
        n = self._root
        while stack or n:
            while n:
                stack.append(n)
                n = n.left
            n = stack.pop()
            yield n
            n = n.right

    def check_invariants(self) -> None:
        """Raises AssertionError when ordering, balance or max_high bookkeeping is wrong."""

        def walk(n: Optional[Node]) -> Tuple[int, float]:
            if n is None:
                return 0, float("-inf")
            hl, ml = walk(n.left)
            hr, mr = walk(n.right)
            assert abs(hl - hr) <= 1, "unbalanced"
            assert n.height == 1 + max(hl, hr), "stale height"
            assert n.max_high == max(n.high, ml, mr), "stale max_high"
            if n.left:
                assert n.left.key() < n.key()
            if n.right:
                assert n.right.key() > n.key()
            return n.height, n.max_high

        walk(self._root)


def free_slots(busy: List[Tuple[float, float]], day_start: float, day_end: float) -> List[Tuple[float, float]]:
    """Gaps between busy intervals within [day_start, day_end] - a small calendar helper."""
    tree = IntervalTree()
    for low, high in busy:
        tree.insert(low, high)
    gaps = []
    cursor = day_start
    for n in tree:
        if n.low > cursor:
            gaps.append((cursor, min(n.low, day_end)))
        cursor = max(cursor, n.high)
        if cursor >= day_end:
            break
    if cursor < day_end:
        gaps.append((cursor, day_end))
    return [g for g in gaps if g[0] < g[1]]


class IntervalTreeTest(unittest.TestCase):
    def test_overlap_matches_brute_force(self):
        rng = random.Random(7)
        tree = IntervalTree()
        intervals = []
        for _ in range(500):
            a = rng.uniform(0, 1000)
            b = a + rng.expovariate(1 / 20)
            intervals.append(tree.insert(a, b, payload=len(intervals)))
        tree.check_invariants()
        for _ in range(200):
            q_lo = rng.uniform(0, 1000)
            q_hi = q_lo + rng.uniform(0, 50)
            expected = sorted(n.payload for n in intervals if n.low <= q_hi and q_lo <= n.high)
            got = sorted(n.payload for n in tree.overlapping(q_lo, q_hi))
            self.assertEqual(expected, got)

    def test_remove_keeps_invariants(self):
        rng = random.Random(11)
        tree = IntervalTree()
        nodes = [tree.insert(rng.randint(0, 100), rng.randint(100, 200)) for _ in range(300)]
        rng.shuffle(nodes)
        for i, n in enumerate(nodes[:250]):
            tree.remove(n)
            if i % 25 == 0:
                tree.check_invariants()
        self.assertEqual(len(tree), 50)
        tree.check_invariants()
        with self.assertRaises(KeyError):
            tree.remove(nodes[0])

    def test_stabbing_and_duplicates(self):
        tree = IntervalTree()
        tree.insert(1, 5, "a")
        tree.insert(1, 5, "b")  # identical bounds are allowed
        tree.insert(6, 9, "c")
        self.assertEqual(sorted(n.payload for n in tree.stabbing(5)), ["a", "b"])
        self.assertEqual([n.payload for n in tree.stabbing(5.5)], [])
        self.assertEqual([n.payload for n in tree.stabbing(6)], ["c"])

    def test_in_order_iteration(self):
        tree = IntervalTree()
        for low in [5, 1, 9, 3, 7]:
            tree.insert(low, low + 1)
        self.assertEqual([n.low for n in tree], [1, 3, 5, 7, 9])

    def test_free_slots(self):
        busy = [(9, 10), (9.5, 11), (13, 14), (16, 18)]
        self.assertEqual(free_slots(busy, 8, 17), [(8, 9), (11, 13), (14, 16)])
        self.assertEqual(free_slots([], 8, 17), [(8, 17)])

    def test_rejects_empty_interval(self):
        with self.assertRaises(ValueError):
            IntervalTree().insert(3, 2)


if __name__ == "__main__":
    unittest.main()
