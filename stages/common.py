"""What every stage entry point shares: reading params.yaml into settings, and turning FsdError into one clear line."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fsdlib.errors import FsdError
from fsdlib.heap import bound_kernel_cache, keep_freed_memory

PARAMS = Path("params.yaml")
F = TypeVar("F", bound=Callable[..., Any])


def load_params(path: Path = PARAMS) -> dict[str, Any]:
    """The whole params file as a dict; a missing or malformed file is an FsdError."""
    if not path.is_file():
        raise FsdError("params file not found (run from the repository root)", path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FsdError(f"not valid YAML ({exc})", path) from None
    if not isinstance(params, dict):
        raise FsdError("expected a mapping of stage sections", path)
    return params


def section(params: dict[str, Any], key: str, path: Path = PARAMS) -> dict[str, Any]:
    """One dotted section of the params (e.g. 'models.A'), which must exist and be a mapping."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise FsdError(f"missing params section {key!r}", path)
        node = node[part]
    if not isinstance(node, dict):
        raise FsdError(f"params section {key!r} must be a mapping", path)
    return node


def build(cls: type, values: dict[str, Any], key: str, path: Path = PARAMS) -> Any:
    """Construct a settings dataclass from a params section, naming unknown keys clearly."""
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except TypeError as exc:
        raise FsdError(f"bad keys in params section {key!r}: {exc}", path) from None


def fold_ids(params: dict[str, Any], path: Path = PARAMS) -> list[int]:
    """The folds trained and predicted (`folds.ids`)."""
    return [int(k) for k in section(params, "folds", path)["ids"]]


def stage(fn: F) -> F:
    """Wrap a stage: log to stderr, and on FsdError print one line and exit 1 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
        keep_freed_memory()
        bound_kernel_cache()
        try:
            return fn(*args, **kwargs)
        except FsdError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
