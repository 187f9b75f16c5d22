"""Pages for the Stream* list RPCs: consecutive runs of a list, each small enough for one gRPC
message, so a node with thousands of containers can be listed (CRIListStreaming)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# Well under gRPC's default 4 MiB receive limit, which clients other than kubelet (16 MiB) keep.
PAGE_BYTES = 1 << 20
_FIELD_OVERHEAD = 6  # tag and length prefix of one repeated element


def pages(items: Iterable[M], budget: int = PAGE_BYTES) -> Iterator[list[M]]:
    """Non-empty runs of `items` in order, each at most `budget` bytes on the wire; an item
    bigger than that on its own gets a page of its own. No items: no page."""
    page: list[M] = []
    size = 0
    for item in items:
        n = item.ByteSize() + _FIELD_OVERHEAD
        if page and size + n > budget:
            yield page
            page, size = [], 0
        page.append(item)
        size += n
    if page:
        yield page
