"""A registry of named things (models, map kinds) that other code may extend."""

from __future__ import annotations


class Registry(dict):
    """{name: item} of items that have a ``name``; `register` adds one."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what  # "model", "map kind": for the error

    def register(self, item):
        """Add ``item`` under ``item.name``; another item of that name is refused."""
        if item.name in self and self[item.name] is not item:
            raise ValueError(f"a {self.what} named {item.name} is registered already")
        self[item.name] = item
        return item
