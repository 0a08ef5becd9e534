"""Progress for long steps: a live bar on a terminal, a few plain lines in CI logs."""

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap items in a progress bar; off a terminal it prints at most one line per 15 s."""
    interactive = sys.stderr.isatty()
    return iter(
        tqdm(
            items,
            desc=desc,
            total=total,
            file=sys.stderr,
            mininterval=0.1 if interactive else 15.0,
            ascii=not interactive,
            leave=interactive,
            dynamic_ncols=interactive,
        )
    )
