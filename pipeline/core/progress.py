"""Progress for long steps: a live bar on a terminal, a few plain lines in CI logs."""

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    items: Iterable[T], desc: str, total: int | None = None, off_terminal: bool = True
) -> Iterator[T]:
    """Wrap items in a progress bar.

    Off a terminal (CI logs, redirected output) the bar prints at most one line per 15 s and
    a final one, or nothing with off_terminal=False (steps that log a summary line anyway).
    """
    interactive = sys.stderr.isatty()
    return iter(
        tqdm(
            items,
            desc=desc,
            total=total,
            file=sys.stderr,
            disable=not (interactive or off_terminal),
            mininterval=0.1 if interactive else 15.0,
            ascii=not interactive,
            leave=not interactive,
            dynamic_ncols=interactive,
        )
    )
