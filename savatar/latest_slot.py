"""The newest-value hand-over between threads (capture -> tracking, tracking -> main loop,
refinement -> viewer): a producer never waits, a slow consumer skips stale values."""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self):
        self._lock = threading.Lock()
        self._value: T | None = None
        self._fresh = False

    def put(self, value: T) -> None:
        with self._lock:
            self._value, self._fresh = value, True

    def take(self) -> T | None:
        """The newest value if one arrived since the last take, else None."""
        with self._lock:
            if not self._fresh:
                return None
            self._fresh = False
            return self._value

    def peek(self) -> T | None:
        """The newest value, whether or not it was taken before (None before the first put)."""
        with self._lock:
            return self._value
