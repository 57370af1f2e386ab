"""Results remembered in this process, least recently used forgotten first."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable


class RecentResults:
    """A bounded memory of results by key: at most ``max_items`` of them and, with
    ``size_of``, at most ``max_bytes`` in all; the least recently used goes first
    (never the one just stored)."""

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None, size_of: Callable[[object], int] | None = None):
        self.max_items, self.max_bytes, self.size_of = max_items, max_bytes, size_of
        self._results: OrderedDict = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._results

    def __len__(self) -> int:
        return len(self._results)

    def get(self, key: Hashable):
        """The result stored under ``key`` (now the most recently used), or None."""
        if key not in self._results:
            return None
        self._results.move_to_end(key)
        return self._results[key]

    def put(self, key: Hashable, result) -> None:
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > 1 and self._over():
            self._results.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (as a new process would start)."""
        self._results.clear()

    def _over(self) -> bool:
        if self.max_items is not None and len(self._results) > self.max_items:
            return True
        return self.max_bytes is not None and sum(map(self.size_of, self._results.values())) > self.max_bytes
