"""Building an avatar from portraits: the queue (checked on workers, reordered, removed), the
build on a worker with its progress and cancel as a task in the Build panel."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from savatar.core.gaussians.rig import Rig
from savatar.viewer.log import Log
from savatar.viewer.portraits import Portrait
from savatar.viewer.shown import ShownAvatar
from savatar.viewer.tasks import Task, Tasks
from savatar.viewer.workers import Jobs

PANEL = "Build"


class PortraitsView(Protocol):
    def set_portraits(self, portraits: list[Portrait]) -> None: ...


class Building:
    """after_build: called on the main thread once a build has replaced the shown avatar (the
    app starts a refinement there when the Build panel asks for one)."""

    def __init__(self, shown: ShownAvatar, log: Log, jobs: Jobs, tasks: Tasks, view: PortraitsView,
                 after_build: Callable[[], None]):
        self.shown, self.log, self.jobs, self.tasks, self.view = shown, log, jobs, tasks, view
        self.after_build = after_build
        self.portraits: list[Portrait] = []
        self.task: Task | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and self.task.running

    # ------------------------------------------------------------------ the queue
    def queue_portrait(self, path: str) -> None:
        from savatar.viewer.portraits import check_portrait

        def done(p: Portrait) -> None:
            self.portraits.append(p)
            self.view.set_portraits(self.portraits)
            (self.log.info if p.ok else self.log.warning)(f"portrait {p.status}")

        self.jobs.submit("portrait", lambda: check_portrait(path), done,
                         lambda e: self.log.error(f"{Path(path).name} could not be checked: {e}"))

    def move_portrait(self, index: int, step: int) -> None:
        j = index + step
        if 0 <= index < len(self.portraits) and 0 <= j < len(self.portraits):
            self.portraits[index], self.portraits[j] = self.portraits[j], self.portraits[index]
            self.view.set_portraits(self.portraits)

    def remove_portrait(self, index: int) -> None:
        if 0 <= index < len(self.portraits):
            del self.portraits[index]
            self.view.set_portraits(self.portraits)

    def clear_portraits(self) -> None:
        self.portraits.clear()
        self.view.set_portraits(self.portraits)

    # ------------------------------------------------------------------ the build
    def build(self, count: int, generator: str = "") -> None:
        """count Gaussians from the queued portraits, parameter-free, or with the generator
        checkpoint at that path (which decides the count itself)."""
        from savatar.core.build.build import BuildCancelled, build_avatar

        if self.busy:
            self.log.warning("a build is already running")
            return
        paths = [p.path for p in self.portraits]
        if not paths:
            self.log.warning("no portraits queued: drop some on the stage first")
            return
        task = self.task = self.tasks.start("build", PANEL, "starting")

        def run():
            if generator:
                from savatar.core.build.generator import build_from_portraits
                avatar, results = build_from_portraits(generator, paths, None, task.on_stage)
            else:
                avatar, results = build_avatar(paths, count=count, progress=task.on_stage, cancel=task.cancel_event)
            return Rig.of(avatar), results

        def done(out) -> None:
            rig, results = out
            for r in results:
                (self.log.info if r.ok else self.log.warning)(f"build: {r.line()}")
            self.shown.show(rig, None)
            text = (f"built {len(rig.avatar)} Gaussians from {sum(r.ok for r in results)} of {len(results)} "
                    f"portraits: Save as... to keep it")
            task.finish(text, 1.0)
            self.log.info(text)
            self.after_build()

        def failed(exc: BaseException) -> None:
            if isinstance(exc, BuildCancelled):
                task.finish("cancelled", 0.0)
                self.log.info("build cancelled")
            else:
                task.finish(f"failed: {exc}", 0.0)
                self.log.error(f"build failed: {exc}")

        self.jobs.submit(task.name, run, done, failed)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
