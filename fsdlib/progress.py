"""Console output (rich): progress bars on stderr, one style for every long loop of the pipeline, and tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

_CONSOLE = Console(stderr=True)


@contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A bar for `total` units; yields `advance(n=1)`. Disabled, it is a no-op."""
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_CONSOLE, disable=not enabled, transient=False) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


def print_table(table: pd.DataFrame, title: str) -> None:
    """A DataFrame as a rich table on stdout, its index as the first column."""
    out = Table(title=title)
    out.add_column(str(table.index.name or ""))
    for column in table.columns:
        out.add_column(str(column), justify="right")
    for index, *values in table.itertuples():
        out.add_row(str(index), *(f"{v:.1f}" if isinstance(v, float) else str(v) for v in values))
    Console().print(out)
