"""A small name -> object registry with "did you mean" errors (datasets, judges, pair builders, engines)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str | None:
    """The closest of `choices` to `name`, or None when nothing is reasonably close."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return match[0] if match else None


def did_you_mean(name: str, choices: list[str]) -> str:
    hint = closest(name, choices)
    return f" (did you mean '{hint}'?)" if hint else f" (choose from: {', '.join(sorted(choices))})"


class UnknownNameError(KeyError):
    """A registry lookup for a name that is not registered; the message suggests the closest name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, list(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
