"""Single-use, expiring tokens that stand for a validated Exec/Attach/PortForward request.

The RPC validates and stores the request; the client then presents the token in the URL. A token
works once and for one minute, as containerd's (and kubelet's) request cache do.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from google.protobuf.message import Message

TOKEN_TTL = 60.0
MAX_TOKENS = 4096  # outstanding requests; the oldest is dropped beyond this


@dataclass(frozen=True)
class Pending:
    kind: str  # exec | attach | portforward
    request: Message
    expires: float


class TokenCache:
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self._ttl = ttl
        self._items: OrderedDict[str, Pending] = OrderedDict()

    def insert(self, kind: str, request: Message) -> str:
        self._expire()
        while len(self._items) >= MAX_TOKENS:
            self._items.popitem(last=False)
        token = secrets.token_urlsafe(16)  # 128 bits, URL-safe alphabet
        self._items[token] = Pending(kind, request, time.monotonic() + self._ttl)
        return token

    def consume(self, kind: str, token: str) -> Message | None:
        """The request behind `token` if it is for `kind` and still valid; it is used up."""
        self._expire()
        pending = self._items.get(token)
        if pending is None or pending.kind != kind:
            return None
        del self._items[token]
        return pending.request

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items:
            token, pending = next(iter(self._items.items()))
            if pending.expires > now:
                break
            del self._items[token]
