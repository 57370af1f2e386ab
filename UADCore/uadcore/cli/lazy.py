"""Option choices and help texts that come from the model registry (torch), read
only when argparse needs them: a value to check, a help to print. A command's
usage error (`uad train --epochs x`) then answers before torch loads; its
``--help`` loads what it shows."""

from __future__ import annotations

import argparse


class LazyChoices:
    """An option's choices, from ``load()`` on first use (checking a value, listing
    them in an error). Give the option a ``metavar``: argparse would list the
    choices in every usage line otherwise."""

    def __init__(self, load):
        self._load, self._items = load, None

    def _all(self) -> list:
        if self._items is None:
            self._items = list(self._load())
        return self._items

    def __contains__(self, value) -> bool:
        return value in self._all()

    def __iter__(self):
        return iter(self._all())


class Later:
    """A help text made by ``make()`` when a help is printed (`HelpFormatter`)."""

    def __init__(self, make):
        self.make = make


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, which makes `Later` help texts when it formats them."""

    def _format_action(self, action):
        if isinstance(action.help, Later):
            action.help = action.help.make()
        return super()._format_action(action)


def model_names() -> LazyChoices:
    """The registry's model names, as choices."""

    def names():
        from uadcore.models import MODELS

        return sorted(MODELS)

    return LazyChoices(names)
