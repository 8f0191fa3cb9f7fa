"""The application log: every message and error, newest last, shared by all threads."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LogEntry:
    time: float
    level: str  # "info" | "warning" | "error"
    text: str

    def line(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.time))}  {self.level:<7}  {self.text}"


class Log:
    """Thread-safe ring of entries; `version` increases with each entry so the console knows
    when to redraw. Messages also go to stderr for people running from a terminal."""

    def __init__(self, capacity: int = 2000, echo: bool = True):
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.version = 0
        self.echo = echo

    def add(self, text: str, level: str = "info") -> None:
        entry = LogEntry(time.time(), level, text)
        with self._lock:
            self._entries.append(entry)
            self.version += 1
        if self.echo:
            import sys
            print(f"[{level}] {text}", file=sys.stderr, flush=True)

    def info(self, text: str) -> None:
        self.add(text, "info")

    def warning(self, text: str) -> None:
        self.add(text, "warning")

    def error(self, text: str) -> None:
        self.add(text, "error")

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)
