"""What every stage entry point shares: logging, the memory settings, and FsdError as one clear line (settings come
from fsdlib.settings)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from fsdlib.errors import FsdError
from fsdlib.heap import bound_kernel_cache, keep_freed_memory

F = TypeVar("F", bound=Callable[..., Any])


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
