"""Progress bars for long loops (data generation, file checks), on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

# Below this many items a loop is quick enough that a bar would only flicker.
MIN_ITEMS = 200


def progress(items: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterator[T]:
    """Yields `items`, drawing a tqdm bar when `enabled` and there are more than MIN_ITEMS."""
    if not enabled or total <= MIN_ITEMS:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)
