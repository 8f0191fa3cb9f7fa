"""One shape for long jobs (opening, saving, exporting, building, tracking, refining): a Task
holds a fraction done, a status line and a cancel event. Workers update it from their own
threads; the main loop reads what changed (Tasks.changed) and the console shows it, one progress
bar and one status line per panel. Core functions keep taking plain callables: `on_stage` and
`frame_counter` adapt their (fraction, stage) and (done, total) reports."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TaskState:
    """What the console shows of a task: fraction in [0, 1], a status line, and whether it runs."""

    fraction: float = 0.0
    text: str = ""
    running: bool = True


class Task:
    """A long job. The main thread starts and finishes it; any thread may update or cancel it."""

    def __init__(self, name: str, panel: str, text: str = ""):
        self.name = name
        self.panel = panel
        self.cancel_event = threading.Event()
        self._lock = threading.Lock()
        self._state = TaskState(text=text)
        self._version = 0

    def update(self, fraction: float | None = None, text: str | None = None, running: bool | None = None) -> None:
        """Change what is given, keep the rest."""
        with self._lock:
            s = self._state
            self._state = TaskState(s.fraction if fraction is None else min(max(float(fraction), 0.0), 1.0),
                                    s.text if text is None else text, s.running if running is None else running)
            self._version += 1

    def finish(self, text: str, fraction: float | None = None) -> None:
        self.update(fraction, text, running=False)

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def running(self) -> bool:
        return self.state().running

    def state(self) -> TaskState:
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, TaskState]:
        """(version, state), read together: the version grows with every update."""
        with self._lock:
            return self._version, self._state

    def on_stage(self, fraction: float, stage: str) -> None:
        """For core progress(fraction, stage) callbacks (the build, the generator)."""
        self.update(fraction, stage)

    def frame_counter(self, label: str) -> Callable[[int, int], None]:
        """For core progress(done, total) callbacks (frame sources, tracking): "label: frame d/t"."""
        def progress(done: int, total: int) -> None:
            self.update(done / total if total else 0.0, f"{label}: frame {done}/{total or '?'}")
        return progress


class Tasks:
    """The newest task of each console panel (main thread only)."""

    def __init__(self):
        self._tasks: dict[str, Task] = {}
        self._shown: dict[str, tuple[Task, int]] = {}

    def start(self, name: str, panel: str, text: str = "") -> Task:
        """A new task shown in panel, in place of the one before it."""
        task = Task(name, panel, text)
        self._tasks[panel] = task
        return task

    def changed(self) -> list[tuple[str, TaskState]]:
        """(panel, state) for every panel whose task changed since the last call."""
        out = []
        for panel, task in self._tasks.items():
            version, state = task.snapshot()
            if self._shown.get(panel) != (task, version):
                self._shown[panel] = (task, version)
                out.append((panel, state))
        return out

