"""Refining the shown avatar on a worker: frames from the portraits it was built from (kept in
its file), an image folder, or a video (tracked first, on a worker); start, pause, stop. Status
and progress go through a task in the Refine panel; each Report, with the avatar as it
improves, comes back through a LatestSlot for the plots and the stage. torch runs
single-threaded in the viewer, so a refinement takes one core and the interface keeps the other."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from savatar.latest_slot import LatestSlot
from savatar.viewer.log import Log
from savatar.viewer.shown import ShownAvatar
from savatar.viewer.tasks import Task, Tasks
from savatar.viewer.workers import Jobs

if TYPE_CHECKING:
    from savatar.core.refine.refine import Frame, RefineConfig, Report

PANEL = "Refine"


class FrameKind(Enum):
    """Where refinement frames come from; the values are the Refine panel's labels."""

    STORED = "the avatar's portraits"
    IMAGES = "image folder"
    VIDEO = "video"


@dataclass(frozen=True)
class FrameChoice:
    """kind; path: the image folder or the video (unused for STORED)."""

    kind: FrameKind = FrameKind.STORED
    path: str = ""


@dataclass(frozen=True)
class VideoPlan:
    """How to refine against a video as `savatar build --video` does. minutes: a time budget
    (None: config.iterations); size, max_frames: the tracked frames' longer side and count (None:
    frames_from_video's defaults); hold_out: fraction of the tracked frames, the clip's last
    stretch, kept out of training when there are at least min_frames_to_hold_out; patience:
    held-out evaluations (reports) without a gain before the run stops, the best state being
    put back at the end (core.refine.keep_best; None: the last state stays)."""

    minutes: float | None = None
    size: int | None = None
    max_frames: int | None = None
    hold_out: float = 0.0
    min_frames_to_hold_out: int = 8
    patience: int | None = None


def with_held_out(config: RefineConfig, frame_count: int) -> RefineConfig:
    """The last frame held out for the PSNR plot when there are more than two."""
    return replace(config, held_out=(frame_count - 1,) if frame_count > 2 else ())


def with_held_out_tail(config: RefineConfig, frame_count: int, plan: VideoPlan) -> RefineConfig:
    """The last plan.hold_out of the frames (at least two) held out, as `savatar build --video`
    does; with too few frames or no hold_out, with_held_out's single frame for the plot."""
    from savatar.core.refine.keep_best import held_out_tail

    held = held_out_tail(frame_count, plan.hold_out, plan.min_frames_to_hold_out)
    return replace(config, held_out=held) if held else with_held_out(config, frame_count)


def status_line(r: Report) -> str:
    return (f"iteration {r.iteration}/{r.iterations}, {r.it_per_s:.1f} it/s, ETA {r.eta_s / 60:.1f} min, "
            f"spikes {100 * r.spike_fraction:.2f}%"
            + (f", PSNR in mask {r.psnr_mask:.2f} dB" if r.psnr_mask is not None else ""))


class Refining:
    """refiner: the running Refiner or None; history: every Report of the current run that the
    main loop took (take_report)."""

    def __init__(self, shown: ShownAvatar, log: Log, jobs: Jobs, tasks: Tasks):
        self.shown, self.log, self.jobs, self.tasks = shown, log, jobs, tasks
        self.refiner = None
        self.history: list[Report] = []
        self.frames: list[Frame] = []  # those of the current (or last) run
        self.task: Task | None = None
        self._slot: LatestSlot = LatestSlot()

    @property
    def busy(self) -> bool:
        """Tracking a video or refining."""
        return self.task is not None and self.task.running

    @property
    def paused(self) -> bool:
        return bool(self.refiner is not None and self.refiner.paused)

    def start(self, choice: FrameChoice, config: RefineConfig) -> None:
        """Refine with config on the chosen frames (config.held_out: see with_held_out)."""
        from savatar.core.refine.frame_sources import frames_from_images, frames_from_stored_sources

        if self.busy:
            self.log.warning("a refinement is already running: stop it first")
            return
        path = choice.path.strip()
        try:
            if choice.kind is FrameKind.VIDEO:
                if not Path(path).is_file():
                    raise ValueError(f"{path or 'no video chosen'}: no such file")
                self._track(path, config)
                return
            if choice.kind is FrameKind.IMAGES:
                frames = frames_from_images(path)
            else:
                frames = frames_from_stored_sources(self.shown.rig.avatar)
        except ValueError as exc:
            msg = str(exc).replace("; use --images or --video", ": choose an image folder or a video")
            self.log.error(f"cannot refine: {msg}")
            return
        except OSError as exc:
            self.log.error(f"cannot refine: {exc}")
            return
        self.run(frames, with_held_out(config, len(frames)))

    def start_video(self, path: str, config: RefineConfig, plan: VideoPlan = VideoPlan()) -> None:
        """Refine against the video at path (tracked first, on a worker) as plan says."""
        if self.busy:
            self.log.warning("a refinement is already running: stop it first")
            return
        if not Path(path).is_file():
            self.log.error(f"cannot refine: {path}: no such file")
            return
        self._track(path, config, plan)

    def _track(self, path: str, config: RefineConfig, plan: VideoPlan | None = None) -> None:
        """Frames from the video, tracked on a worker; then the refinement, unless stopped."""
        from savatar.core.refine.frame_sources import frames_from_video

        name = Path(path).name
        sizing = {} if plan is None else {k: v for k, v in (("size", plan.size), ("max_frames", plan.max_frames))
                                          if v is not None}
        task = self.task = self.tasks.start("track", PANEL, f"tracking {name}")
        avatar = self.shown.rig.avatar

        def tracked(frames: list[Frame]) -> None:
            self.log.info(f"{name}: {len(frames)} tracked frames")
            if task.cancelled:
                task.finish("stopped before refining")
                return
            if plan is None:
                self.run(frames, with_held_out(config, len(frames)), task)
            else:
                self.run(frames, with_held_out_tail(config, len(frames), plan), task, plan.minutes, plan.patience)

        def failed(exc: BaseException) -> None:
            task.finish(f"failed: {exc}")
            self.log.error(f"cannot refine: {exc}")

        self.jobs.submit(task.name, lambda: frames_from_video(path, avatar, progress=task.frame_counter(f"tracking {name}"),
                                                          **sizing),
                         tracked, failed)

    def run(self, frames: list[Frame], config: RefineConfig, task: Task | None = None,
            minutes: float | None = None, patience: int | None = None) -> None:
        """A Refiner on the shown avatar and frames, in a worker thread; task: the one that
        prepared the frames, if any; minutes: a time budget from now (core.refine.time_budget),
        config.iterations being then only the first guess that shapes the first steps;
        patience: see VideoPlan (needs config.held_out)."""
        from savatar.core.refine.keep_best import KeepBest
        from savatar.core.refine.refine import Refiner
        from savatar.core.refine.time_budget import TimeBudget

        try:
            refiner = Refiner(self.shown.rig.avatar, self.shown.rig, frames, config)
        except ValueError as exc:
            self.log.error(f"cannot refine: {exc}")
            if task is not None:
                task.finish(f"cannot refine: {exc}")
            return
        if minutes is not None:
            refiner.pre_step_hooks.append(TimeBudget(time.monotonic() + 60.0 * minutes))
        task = self.task = task or self.tasks.start("refine", PANEL)
        task.update(0.0, "starting")
        self.refiner, self.history = refiner, []
        self.frames = frames
        length = f"{minutes:g} minutes" if minutes is not None else f"{config.iterations} iterations"
        held = f" ({len(config.held_out)} more held out)" if config.held_out else ""
        self.log.info(f"refining {len(self.shown.rig.avatar)} Gaussians on {len(frames) - len(config.held_out)} "
                      f"frames{held} for {length}")

        keep = KeepBest(refiner, patience) if patience is not None and config.held_out else None

        def on_report(report: Report) -> None:  # worker thread: hand over, never touch the GUI
            if keep is not None:
                keep(report)
            self._slot.put((report, refiner.current_avatar()))
            task.update(report.iteration / max(report.iterations, 1), status_line(report))

        def done(report: Report) -> None:
            self.refiner = None
            self.take_report()  # the last report's avatar first, so that a restored best is what stays shown
            kept = ""
            if keep is not None and keep.restore():  # the worker has finished: its parameters are ours
                self.shown.refined(refiner.current_avatar())
                kept = f"; kept iteration {keep.best_iteration}, the best by held-out PSNR ({keep.best_db:.2f} dB)"
            why = ", the held-out frames no longer improved" if keep is not None and keep.stopped_early else ""
            task.finish(f"finished{why}: {status_line(report)}{kept}")
            self.log.info(f"refinement ended at iteration {report.iteration}{why}"
                          + (f", held-out PSNR in mask {report.psnr_mask:.2f} dB" if report.psnr_mask is not None else "")
                          + kept)

        def failed(exc: BaseException) -> None:
            self.refiner = None
            task.finish(f"failed: {exc}")
            self.log.error(f"refinement failed: {exc}")

        self.jobs.submit("refine", lambda: refiner.run(on_report), done, failed)

    def pause(self) -> None:
        """Pause, or resume when paused."""
        if self.refiner is None:
            return
        if self.refiner.paused:
            self.refiner.resume()
        else:
            self.refiner.pause()

    def stop(self) -> None:
        """Stop the refinement, or the one a video's tracking is preparing."""
        if self.task is not None:
            self.task.cancel()
        if self.refiner is not None:
            self.refiner.stop()

    def take_report(self) -> bool:
        """Main thread: the newest report to the history, its avatar to the stage; True if new."""
        got = self._slot.take()
        if got is None:
            return False
        report, avatar = got
        self.history.append(report)
        if report.event:
            self.log.warning(f"refinement: {report.event}")
        self.shown.refined(avatar)
        return True
