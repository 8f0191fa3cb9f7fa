"""Progress bars for the CLI: tqdm on a terminal; off one (CI logs, `> log.txt`, a pipe) a plain
line every few seconds and one at the end, instead of hundreds of carriage-return redraws."""
from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

from tqdm import tqdm

PLAIN_INTERVAL_S = 5.0


class PlainLines:
    """A text stream for tqdm off a terminal. Its redraws ("\\r" + status) become a plain line at
    most every `interval` seconds; the newest status is printed when the bar closes (tqdm then
    writes a lone newline); other text (tqdm.write messages) passes through."""

    def __init__(self, stream: IO[str], interval: float = PLAIN_INTERVAL_S):
        self.stream, self.interval = stream, interval
        self._pending = ""
        self._printed = ""
        self._last = -math.inf
        self._mid_line = False  # passed-through text not yet ended by its newline

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, s: str) -> None:
        if s.startswith("\r"):
            status = s.strip("\r").rstrip()
            if status:  # blank redraws only clear the line: nothing to say
                self._pending = status
                if time.monotonic() - self._last >= self.interval:
                    self._emit()
        elif s == "\n" and not self._mid_line:
            self._emit()
        elif s:
            self.stream.write(s)
            self._mid_line = not s.endswith("\n")

    def _emit(self) -> None:
        if self._pending and self._pending != self._printed:
            self.stream.write(self._pending + "\n")
            self.stream.flush()
            self._printed = self._pending
        self._pending = ""
        self._last = time.monotonic()

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Any = None, *, file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs) on stderr (or file): redrawn in place on a terminal, plain lines
    elsewhere (those always keep the final line, whatever `leave` says)."""
    stream = file or sys.stderr
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs["leave"] = True
    return tqdm(iterable, file=PlainLines(stream), **kwargs)
