"""Background jobs whose results come back to the main loop. Workers never touch GL or Dear
PyGui: the main loop runs their callbacks (see also savatar.latest_slot)."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

class Jobs:
    """Background jobs (file loading, exports): each runs fn() on its own daemon-less thread;
    on_done(result) or on_error(exc) later run on the main thread via poll()."""

    def __init__(self):
        self._done: queue.Queue[tuple[Callable, Any]] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def submit(self, name: str, fn: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException], None]) -> None:
        def run():
            try:
                result = fn()
            except Exception as exc:  # reported to the user through on_error
                self._done.put((on_error, exc))
            else:
                self._done.put((on_done, result))

        t = threading.Thread(target=run, name=f"job:{name}")
        self._threads = [th for th in self._threads if th.is_alive()] + [t]
        t.start()

    def poll(self) -> int:
        """Run the callbacks of finished jobs on this (the main) thread; returns how many."""
        n = 0
        while True:
            try:
                callback, value = self._done.get_nowait()
            except queue.Empty:
                return n
            callback(value)
            n += 1

    @property
    def busy(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float = 2.0) -> None:
        for t in self._threads:
            t.join(timeout)
