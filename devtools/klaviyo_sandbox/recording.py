"""The log of /api requests that contract tests read back (``record_requests=True``).

Bodies are kept raw and parsed only when read, within a byte budget: when it is spent,
the oldest bodies are let go first (their entries say ``"body_omitted": true``), so a
test that pushes a hundred 2.5 MB jobs does not hold them all in memory.
"""

from __future__ import annotations

import collections
from typing import Any

import orjson

__all__ = ["RequestLog"]


class RequestLog:
    """The last ``max_requests`` requests, with at most ``max_bytes`` of bodies in all."""

    def __init__(self, *, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._entries: collections.deque[tuple[dict[str, Any], bytes | None]] = collections.deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, entry: dict[str, Any], body: bytes | None) -> None:
        self._entries.append((entry, body))
        self._bytes += len(body or b"")
        self._trim()

    def resize(self, *, max_requests: int, max_bytes: int) -> None:
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self._trim()

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def entries(self) -> list[dict[str, Any]]:
        """Copies of the entries, oldest first, each with its body parsed (or None)."""
        return [{**entry, "body": _parse(body)} for entry, body in self._entries]

    def _trim(self) -> None:
        while len(self._entries) > self.max_requests:
            _, body = self._entries.popleft()
            self._bytes -= len(body or b"")
        if self._bytes <= self.max_bytes:
            return
        for i, (entry, body) in enumerate(self._entries):
            if body:
                self._entries[i] = ({**entry, "body_omitted": True}, None)
                self._bytes -= len(body)
                if self._bytes <= self.max_bytes:
                    return


def _parse(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
