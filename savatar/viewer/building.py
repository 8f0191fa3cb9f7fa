"""Building an avatar from portraits: the queue (checked on workers, reordered, removed), the
build on a worker with its progress and cancel as a task in the Build panel. A video queues the
few frames savatar.core.build.from_video chooses from it (scanned on a worker); a build that
used any of them hands that video on to after_build, which refines against it."""
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


class ScanCancelled(Exception):
    """The Build panel's Cancel while a video was being scanned."""


class Building:
    """after_build(video): called on the main thread once a build has replaced the shown avatar,
    with the video whose frames it used (the first such one), or None when it used only
    portraits (the app starts a refinement there: against the video, or when the Build panel
    asks for one)."""

    def __init__(self, shown: ShownAvatar, log: Log, jobs: Jobs, tasks: Tasks, view: PortraitsView,
                 after_build: Callable[[str | None], None]):
        self.shown, self.log, self.jobs, self.tasks, self.view = shown, log, jobs, tasks, view
        self.after_build = after_build
        self.portraits: list[Portrait] = []
        self.task: Task | None = None
        self.scan_task: Task | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and self.task.running

    @property
    def scanning(self) -> bool:
        return self.scan_task is not None and self.scan_task.running

    # ------------------------------------------------------------------ the queue
    def queue_portrait(self, path: str) -> None:
        from savatar.viewer.portraits import check_portrait

        def done(p: Portrait) -> None:
            self.portraits.append(p)
            self.view.set_portraits(self.portraits)
            (self.log.info if p.ok else self.log.warning)(f"portrait {p.status}")

        self.jobs.submit("portrait", lambda: check_portrait(path), done,
                         lambda e: self.log.error(f"{Path(path).name} could not be checked: {e}"))

    def queue_video(self, path: str, sources: int | None = None) -> None:
        """Scan the video on a worker and queue the frames chosen to build from (at most
        sources, default as `savatar build --video`); progress in the Build panel; a clip that
        gives none (unreadable, too short, no face, too dark) is one line in the Log."""
        from savatar.core.build.from_video import chosen_frames
        from savatar.core.build.source_frames import DEFAULT_SOURCES
        from savatar.viewer.portraits import check_video_frames

        name = Path(path).name
        if self.busy or self.scanning:
            self.log.warning(f"{name}: wait for the {'build' if self.busy else 'scan'} under way, or cancel it")
            return
        k = DEFAULT_SOURCES if sources is None else sources
        task = self.task = self.scan_task = self.tasks.start("choose frames", PANEL, f"scanning {name}")
        counter = task.frame_counter(f"choosing frames of {name}")

        def progress(done: int, total: int) -> None:
            if task.cancelled:  # raised inside the scan's loop: it stops at this frame
                raise ScanCancelled()
            counter(done, total)

        def run():
            frames, choice, scan = chosen_frames(path, k, progress=progress)
            task.update(1.0, f"checking the {len(frames)} frames chosen from {name}")
            portraits = check_video_frames(path, frames)
            views = {scan.stats[i].index: scan.stats[i] for i in choice.chosen}
            for p in portraits:  # the view each adds: why these frames
                if p.ok:
                    v = views[p.frame]
                    p.status += f", head yaw {round(v.yaw):+d} pitch {round(v.pitch):+d} deg"
            return portraits, scan, choice

        def done(out) -> None:
            portraits, scan, choice = out
            self.portraits.extend(portraits)
            self.view.set_portraits(self.portraits)
            text = (f"{name}: {len(portraits)} frames chosen of {len(scan.stats)} with a face "
                    f"({len(choice.rejected)} unusable): Build to make the avatar")
            task.finish(text, 1.0)
            self.log.info(text)
            for p in portraits:
                if not p.ok:
                    self.log.warning(f"portrait {p.status}")

        def failed(exc: BaseException) -> None:
            if isinstance(exc, ScanCancelled):
                task.finish("cancelled", 0.0)
                self.log.info(f"{name}: scan cancelled")
                return
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if name not in line:
                line = f"{name}: {line}"
            task.finish(f"failed: {line}", 0.0)
            self.log.error(line)

        self.jobs.submit(task.name, run, done, failed)

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
        from savatar.core.build.build import BuildCancelled, build_avatar, relabel_sources

        if self.busy:
            self.log.warning("a build is already running")
            return
        if self.scanning:
            self.log.warning("frames are still being chosen from a video: wait for them, or cancel")
            return
        queued = list(self.portraits)
        sources = [p.source for p in queued]
        if not sources:
            self.log.warning("no portraits queued: drop some (or a video) on the stage first")
            return
        if generator and any(p.image is not None for p in queued):
            self.log.warning("the generator builds from portrait files: remove the video frames or clear the generator")
            return
        task = self.task = self.tasks.start("build", PANEL, "starting")
        # build_avatar names an array source "image N" (N: its place in the list): the queue's labels instead.
        labels = [p.label if p.image is not None else None for p in queued]
        videos = [p.path for p in queued if p.image is not None]

        def run():
            if generator:
                from savatar.core.build.generator import build_from_portraits
                avatar, results = build_from_portraits(generator, sources, None, task.on_stage)
            else:
                avatar, results = build_avatar(sources, count=count, progress=task.on_stage, cancel=task.cancel_event)
            relabel_sources(avatar, results, labels)
            return Rig.of(avatar), results

        def done(out) -> None:
            rig, results = out
            for r in results:
                (self.log.info if r.ok else self.log.warning)(f"build: {r.line()}")
            self.shown.show(rig, None)
            text = (f"built {len(rig.avatar)} Gaussians from {sum(r.ok for r in results)} of {len(results)} "
                    f"{'sources' if videos else 'portraits'}: Save as... to keep it")
            task.finish(text, 1.0)
            self.log.info(text)
            used = {p.path for p, r in zip(queued, results) if r.ok and p.image is not None}
            self.after_build(next((v for v in videos if v in used), None))

        def failed(exc: BaseException) -> None:
            if isinstance(exc, BuildCancelled):
                task.finish("cancelled", 0.0)
                self.log.info("build cancelled")
            else:
                task.finish(f"failed: {exc}", 0.0)
                self.log.error(f"build failed: {exc}")

        self.jobs.submit(task.name, run, done, failed)

    def cancel(self) -> None:
        """Cancel the build, or the scan of a video."""
        if self.task is not None:
            self.task.cancel()
