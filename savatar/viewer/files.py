"""Avatar files and exports: open, save, save as, the recent files and the Avatar panel's info,
PLY and MP4 exports. Their progress shows as a task in the Avatar panel."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from savatar.core.gaussians.antispike import statistics
from savatar.core.gaussians.rig import Rig
from savatar.core.io.pixels import to_uint8
from savatar.viewer.driving import Driving
from savatar.viewer.log import Log
from savatar.viewer.orbit import Orbit
from savatar.viewer.settings import Settings
from savatar.viewer.shown import ShownAvatar
from savatar.viewer.tasks import Task, Tasks
from savatar.viewer.workers import Jobs

if TYPE_CHECKING:
    from savatar.viewer.stage import Stage

PANEL = "Avatar"
VIDEO_SIZE = 512  # MP4 exports are square, this many pixels a side


class FilesView(Protocol):
    def set_info(self, text: str) -> None: ...
    def set_spikes(self, text: str) -> None: ...
    def set_recent(self, files: list[str]) -> None: ...


class AvatarFiles:
    """stage: renders the MP4 export's frames (main thread: one per loop turn, see
    advance_export); driving: the motion or pose the exports show; background: the stage's."""

    def __init__(self, shown: ShownAvatar, log: Log, jobs: Jobs, tasks: Tasks, settings: Settings,
                 view: FilesView, stage: Stage, driving: Driving,
                 background: Callable[[], tuple[float, float, float]]):
        self.shown, self.log, self.jobs, self.tasks, self.settings = shown, log, jobs, tasks, settings
        self.view, self.stage, self.driving, self.background = view, stage, driving, background
        self._export: Iterator[None] | None = None
        shown.on_swap(self._avatar_swapped)
        self._avatar_swapped(shown.rig, shown.path)

    def _avatar_swapped(self, rig: Rig, path: str | None) -> None:
        if path:
            self.settings.add_recent(path)
        self.refresh_info()

    def refresh_info(self) -> None:
        a, data, path = self.shown.rig.avatar, self.shown.rig.data, self.shown.path
        size = f"{Path(path).stat().st_size / 1e6:.1f} MB" if path and Path(path).exists() else "-"
        self.view.set_info(f"file        {path or '(bundled default avatar)'}\n"
                           f"Gaussians   {len(a)}   SH degree {a.sh_degree}\n"
                           f"head model  {data.name}: {len(data.v_template)} vertices, {len(data.faces)} faces\n"
                           f"file size   {size}")
        stats = statistics(a, self.shown.spike_cfg)
        self.view.set_spikes("anti-spike: " + ", ".join(f"{k} {s.count_over} over" for k, s in stats.items()))
        self.view.set_recent(self.settings.recent_files)

    def _failed(self, task: Task, what: str) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            task.finish("", 0.0)
            self.log.error(f"{what}: {exc}")
        return failed

    # ------------------------------------------------------------------ avatar files
    def open(self, path: str) -> None:
        from savatar.core.io.avatar_file import load_avatar

        self.log.info(f"opening {path} ...")
        task = self.tasks.start("open", PANEL, f"loading {Path(path).name} ...")

        def done(rig: Rig) -> None:
            self.shown.show(rig, path)
            task.finish("", 0.0)
            self.log.info(f"opened {path} ({len(rig.avatar)} Gaussians)")

        self.jobs.submit(task.name, lambda: Rig.of(load_avatar(path)), done, self._failed(task, f"cannot open {path}"))

    def save(self, path: str | None) -> None:
        """Save to path, or to the avatar's own file when None."""
        from savatar.core.io.avatar_file import save_avatar

        path = path or self.shown.path
        if not path:
            self.log.warning("the default avatar has no file yet: use Save as...")
            return
        rig = self.shown.rig
        head = rig.data if rig.avatar.head_model == "open-head" else None
        task = self.tasks.start("save", PANEL, f"saving {Path(path).name} ...")

        def done(_) -> None:
            self.shown.saved_as(path)
            self.settings.add_recent(path)
            self.refresh_info()
            task.finish("", 0.0)
            self.log.info(f"saved {path}")

        self.jobs.submit(task.name, lambda: save_avatar(rig.avatar, path, head=head), done,
                         self._failed(task, f"cannot save {path}"))

    # ------------------------------------------------------------------ exports
    def export_ply(self, path: str) -> None:
        """The avatar as posed now, posed again on the worker."""
        from savatar.core.io.ply import export_ply

        rig, params = self.shown.rig, self.driving.drive.current or ()
        task = self.tasks.start("export-ply", PANEL, f"exporting {Path(path).name} ...")

        def done(_) -> None:
            task.finish("", 0.0)
            self.log.info(f"exported {path}")

        self.jobs.submit(task.name, lambda: export_ply(rig.world(*params), path), done,
                         self._failed(task, f"cannot export {path}"))

    def export_video(self, path: str, frames: int = 90) -> None:
        """The loaded motion (or an orbit) rendered at VIDEO_SIZE, one frame per loop turn with the
        stage's GL context (advance_export): the interface stays live and workers stay off GL."""
        from savatar.core.io.video_file import VideoFileError, VideoWriter

        motion = self.driving.playback.motion
        try:
            writer = VideoWriter(path, motion.fps if motion else 30.0, VIDEO_SIZE, VIDEO_SIZE)
        except VideoFileError as exc:
            self.log.error(str(exc))
            return
        count = len(motion) if motion else frames
        orbit = Orbit.from_dict(self.stage.orbit.to_dict())
        params = self.driving.drive.current
        name = Path(path).name
        task = self.tasks.start("export-mp4", PANEL, f"exporting {name} ...")

        def steps() -> Iterator[None]:
            try:
                for i in range(count):
                    if motion is not None:
                        p = (motion.expr[i], motion.pose[i], motion.translation[i])
                    else:
                        p = params
                        orbit.yaw = self.stage.orbit.yaw + 360.0 * i / count
                    img = self.stage.render_offscreen(self.shown.rig.world(*p), orbit.camera(VIDEO_SIZE, VIDEO_SIZE),
                                                      self.background()).rgb
                    writer.write(to_uint8(img))
                    task.update((i + 1) / count, f"exporting {name}: frame {i + 1}/{count}")
                    yield
                writer.close()
                task.finish("", 0.0)
                self.log.info(f"exported {path} ({count} frames)")
            except Exception as exc:  # reported; the viewer keeps running
                writer.abort()
                self._failed(task, f"cannot export {path}")(exc)

        self._export = steps()

    @property
    def exporting(self) -> bool:
        return self._export is not None

    def advance_export(self) -> None:
        """Main thread, once per loop turn: the next frame of a running MP4 export."""
        if self._export is None:
            return
        try:
            next(self._export)
        except StopIteration:
            self._export = None
