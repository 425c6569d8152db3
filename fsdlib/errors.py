"""One exception type for every input problem, so entry points can print one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class FsdError(Exception):
    """An input or configuration problem, phrased for the user: which file, what is wrong."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


def check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    """FsdError unless `value` is one of `allowed`, naming the setting and the choices."""
    if value not in allowed:
        raise FsdError(f"{what} must be {' or '.join(allowed)}, got {value!r}")
