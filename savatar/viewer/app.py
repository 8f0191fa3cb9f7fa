"""`savatar-viewer`: two windows, one process, one main loop.

The stage (pyglet + moderngl) draws the avatar; the console (Dear PyGui) holds the panels.
Long work runs on worker threads (viewer.workers.Jobs) and comes back to this loop, which is
the only place that swaps the avatar or touches GL and Dear PyGui."""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from savatar.core.drive.motion import Motion, load_motion, save_motion
from savatar.core.gaussians.antispike import AntiSpikeConfig, spike_mask, statistics
from savatar.core.gaussians.facing import skippable_faces, visible_gaussians
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.gaussians.rig import Rig
from savatar.core.io.pixels import to_uint8
from savatar.core.render.camera import scaled_camera
from savatar.latest_slot import LatestSlot
from savatar.viewer.drops import DropKind, classify
from savatar.viewer.log import Log
from savatar.viewer.orbit import Orbit
from savatar.viewer.portraits import Portrait
from savatar.viewer.settings import Settings, load_settings, save_settings
from savatar.viewer.state import DRIVE_SOURCES, Drive, Playback, Recorder, RenderSettings, StageTimings
from savatar.viewer.workers import Jobs

LIVE_SOURCES = ("webcam", "microphone", "audio file")
# How far behind the avatar's surface, along the view rays, the occluding mesh sits: more than
# the splats' own offsets from the mesh (also at silhouettes, where an inset along the surface
# normal would not move it back at all), much less than the head's depth.
OCCLUDER_DEPTH_MARGIN = 0.025
OCCLUDER_REGIONS = ("scalp", "neck")
OCCLUDER_FACE_CLEARANCE = 0.03  # metres kept between the occluder and the face region
# With splat resolution "auto", frames are drawn at half resolution while something moves and
# once more at full resolution when nothing has changed for this long.
STILL_AFTER_S = 0.25
# With nothing to redraw for this long, the HUD is drawn once more saying "idle" instead of a
# frame rate that no longer describes anything.
IDLE_AFTER_S = 1.0


def occluder_faces(data) -> np.ndarray | None:
    """Triangles of the cranium and neck: opaque, and what hides the most splats (the far
    side of the head). Thin parts (lips, eyelids, ears' rims) and the mouth are left out: they
    hide little and sit too close to the splats in front of them."""
    from scipy.spatial import cKDTree

    keep = np.zeros(len(data.v_template), bool)
    for name in OCCLUDER_REGIONS:
        keep[data.vertex_regions.get(name, [])] = True
    face_part = data.vertex_regions.get("face", [])
    if len(face_part):
        # Near the face's border the skull surface may pass in front of the face's own edge.
        dist, _ = cKDTree(data.v_template[face_part]).query(data.v_template)
        keep &= dist > OCCLUDER_FACE_CLEARANCE
    faces = data.faces[keep[data.faces].all(1)]
    return faces if len(faces) else None


def push_back(verts: np.ndarray, eye: np.ndarray, margin: float) -> np.ndarray:
    """verts (V, 3) moved margin metres further from the camera at eye (3,) along their rays."""
    rays = verts - eye
    return verts + margin * rays / np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-9)


class App:
    def __init__(self, avatar: GaussianAvatar, avatar_path: str | None, size: tuple[int, int],
                 visible: bool = True, settings: Settings | None = None, settings_warning: str | None = None):
        from savatar.viewer.console import Console
        from savatar.viewer.stage import Stage, StageCallbacks

        self.log = Log()
        self.jobs = Jobs()
        self.settings = settings or Settings()
        self.render = RenderSettings()
        self.timings = StageTimings()
        self.playback = Playback()
        self.recorder = Recorder()
        self.spike_cfg = AntiSpikeConfig()
        self.portraits: list[Portrait] = []
        self._build_cancel: threading.Event | None = None
        self._build_progress: tuple[float, str] = (0.0, "")
        self._refine_prep: tuple[float, str] | None = None  # (fraction, text) while a video is tracked
        self.refiner = None
        self._refine_slot: LatestSlot = LatestSlot()
        self._refine_history: list = []
        self.running = True
        self.export = None  # generator advanced one frame per loop iteration
        self._last_key: tuple | None = None
        self._world = None
        self._mesh_verts: np.ndarray | None = None
        self._last_look: tuple | None = None
        self._last_scene: tuple | None = None
        self._last_motion = 0.0
        self._last_change = 0.0  # when a redraw was last needed for anything but the HUD
        self._hud_idle = False
        self.live = None  # the running webcam / microphone / audio-file source
        self.drive: Drive | None = None
        self._last_recording: Motion | None = None
        self._pending_screenshot: str | None = None

        self.stage = Stage(size, StageCallbacks(self.handle_drop, self.handle_key, self.quit), visible,
                           tuple(self.settings.stage_pos) if self.settings.stage_pos else None)
        if self.settings.camera:
            self.stage.orbit = Orbit.from_dict(self.settings.camera)
        self._set_avatar(Rig.of(avatar), avatar_path)
        self.console = Console(self, self.rig.data.expr_names, tuple(self.settings.console_size),
                               tuple(self.settings.console_pos) if self.settings.console_pos else None)
        self.console.set_recent(self.settings.recent_files)
        self._refresh_info()
        if settings_warning:
            self.log.warning(settings_warning)
        self.log.info(f"showing {avatar_path or 'the bundled default avatar'} ({len(avatar)} Gaussians)")

    # ------------------------------------------------------------------ avatar
    def _set_avatar(self, rig: Rig, path: str | None) -> None:
        """Swap the shown avatar (main thread only)."""
        self.rig = rig
        self.avatar_path = path
        old = self.drive
        self.drive = Drive.neutral(rig.model.num_expr)
        if old is not None:  # the new avatar keeps being driven the same way
            self.drive.source, self.drive.strength, self.drive.smoothing = old.source, old.strength, old.smoothing
        if self.playback.motion is not None:
            self.playback.motion = self.playback.motion.remap(rig.data.expr_names)
        self.spikes = spike_mask(rig.avatar, self.spike_cfg).numpy()
        data = rig.data
        # One light-blue tint, so the overlay reads as the mesh and not as more skin.
        self.stage.set_mesh(data.faces, np.tile(np.float32([0.35, 0.6, 1.0]), (len(data.v_template), 1)),
                            occluder_faces(data))
        self._skippable = skippable_faces(data)
        self._last_key = None
        if path:
            self.settings.add_recent(path)

    def _refresh_info(self) -> None:
        a, data = self.rig.avatar, self.rig.data
        size = f"{Path(self.avatar_path).stat().st_size / 1e6:.1f} MB" if self.avatar_path and Path(self.avatar_path).exists() else "-"
        self.console.set_info(f"file        {self.avatar_path or '(bundled default avatar)'}\n"
                              f"Gaussians   {len(a)}   SH degree {a.sh_degree}\n"
                              f"head model  {data.name}: {len(data.v_template)} vertices, {len(data.faces)} faces\n"
                              f"file size   {size}")
        stats = statistics(a, self.spike_cfg)
        self.console.set_spikes("anti-spike: " + ", ".join(f"{k} {s.count_over} over" for k, s in stats.items()))
        self.console.set_recent(self.settings.recent_files)

    def open_avatar(self, path: str) -> None:
        from savatar.core.io.avatar_file import load_avatar

        self.log.info(f"opening {path} ...")
        self.console.set_job(f"loading {Path(path).name} ...")

        def done(rig: Rig) -> None:
            self._set_avatar(rig, path)
            self._refresh_info()
            self.console.set_values(self.drive.expr, self.drive.pose, self.drive.translation)
            self.console.set_job("")
            self.log.info(f"opened {path} ({len(rig.avatar)} Gaussians)")

        self.jobs.submit("open", lambda: Rig.of(load_avatar(path)), done, lambda e: self._failed(f"cannot open {path}", e))

    def save_avatar(self, path: str | None) -> None:
        from savatar.core.io.avatar_file import save_avatar

        path = path or self.avatar_path
        if not path:
            self.log.warning("the default avatar has no file yet: use Save as...")
            return
        avatar, head = self.rig.avatar, self.rig.data if self.rig.avatar.head_model == "open-head" else None
        self.jobs.submit("save", lambda: save_avatar(avatar, path, head=head),
                         lambda _: self._saved(path), lambda e: self._failed(f"cannot save {path}", e))

    def _saved(self, path: str) -> None:
        self.avatar_path = path
        self.settings.add_recent(path)
        self._refresh_info()
        self.log.info(f"saved {path}")

    def export_ply(self, path: str) -> None:
        from savatar.core.io.ply import export_ply

        g = self._world
        self.jobs.submit("export-ply", lambda: export_ply(g, path), lambda _: self.log.info(f"exported {path}"),
                         lambda e: self._failed(f"cannot export {path}", e))

    def export_video(self, path: str, frames: int = 90) -> None:
        """The loaded motion (or an orbit) rendered at 512x512, one frame per loop iteration with
        the stage's GL context: the UI stays live and workers stay off GL."""
        from savatar.core.io.video_file import VideoFileError, VideoWriter

        motion = self.playback.motion
        count = len(motion) if motion else frames
        size = 512
        try:
            writer = VideoWriter(path, motion.fps if motion else 30.0, size, size)
        except VideoFileError as exc:
            self.log.error(str(exc))
            return
        orbit = Orbit.from_dict(self.stage.orbit.to_dict())
        params = self.drive.current

        def steps():
            try:
                for i in range(count):
                    if motion is not None:
                        p = (motion.expr[i], motion.pose[i], motion.translation[i])
                    else:
                        p = params
                        orbit.yaw = self.stage.orbit.yaw + 360.0 * i / count
                    img = self.stage.render_offscreen(self.rig.world(*p), orbit.camera(size, size), self.render.background)
                    writer.write(to_uint8(img))
                    self.console.set_job(f"exporting {Path(path).name}: frame {i + 1}/{count}")
                    yield
                writer.close()
                self.log.info(f"exported {path} ({count} frames)")
            except Exception as exc:  # reported; the viewer keeps running
                writer.abort()
                self._failed(f"cannot export {path}", exc)
            self.console.set_job("")

        self.export = steps()

    def _failed(self, what: str, exc: BaseException) -> None:
        self.console.set_job("")
        self.log.error(f"{what}: {exc}")

    # ------------------------------------------------------------------ motion and drive
    def load_motion(self, path: str) -> None:
        def done(motion: Motion) -> None:
            self.playback.load(motion.remap(self.rig.data.expr_names), Path(path).name)
            self.drive.source = "motion file"
            self.log.info(f"loaded motion {path}: {len(motion)} frames at {motion.fps:g} fps")

        self.jobs.submit("motion", lambda: load_motion(path), done, lambda e: self._failed("cannot load motion", e))

    def save_recording(self, path: str) -> None:
        motion = self._last_recording
        if motion is None:
            self.log.warning("nothing recorded yet")
            return
        self.jobs.submit("save-motion", lambda: save_motion(motion, path),
                         lambda _: self.log.info(f"saved {len(motion)} frames to {path}"),
                         lambda e: self._failed(f"cannot save {path}", e))

    def toggle_record(self) -> None:
        if self.recorder.recording:
            self._last_recording = self.recorder.stop(self.rig.data.expr_names)
            n = len(self._last_recording) if self._last_recording else 0
            self.log.info(f"recorded {n} frames: save them from the Motion panel")
        else:
            self.recorder.start()
            self.log.info("recording")

    def toggle_play(self) -> None:
        if self.playback.motion is None:
            self.log.warning("load a motion file first")
            return
        self.playback.playing = not self.playback.playing
        if self.playback.playing:
            self.drive.source = "motion file"

    def seek(self, fraction: float) -> None:
        self.playback.seek(fraction)

    def set_expr(self, index: int, value: float) -> None:
        self.drive.expr[index] = value
        self.drive.source = "sliders"

    def set_pose(self, index: int, value: float) -> None:
        self.drive.pose[index] = value
        self.drive.source = "sliders"

    def set_translation(self, index: int, value: float) -> None:
        self.drive.translation[index] = value

    def reset_drive(self) -> None:
        self.drive.reset()
        self.console.set_values(self.drive.expr, self.drive.pose, self.drive.translation)

    def set_source(self, source: str) -> None:
        self._stop_live()
        if source in LIVE_SOURCES:
            self._start_live(source)
            return
        if source == "motion file" and self.playback.motion is None:
            self.log.warning("load a motion file first")
            source = "sliders"
        self.drive.source = source if source in DRIVE_SOURCES else "sliders"

    def _start_live(self, source: str) -> None:
        """Open the webcam/video, microphone or audio file on a worker (that can take a while),
        then drive from it; a failure is logged and the sliders stay in charge."""
        from savatar.drive.sources import AudioFileSource, MicrophoneSource, VideoSource

        data = self.rig.data
        c = self.console
        if source == "webcam":
            dev = c.value(c.video_device).strip() or "0"
            live = VideoSource(data, int(dev) if dev.isdigit() else dev)
        elif source == "microphone":
            live = MicrophoneSource(data)
        else:
            path = c.value(c.audio_path)
            if not path:
                self.log.warning("choose an audio file first (Audio file... in the Drive panel)")
                self.drive.source = "sliders"
                return
            live = AudioFileSource(data, path)
        self.drive.source = "sliders"
        self.log.info(f"starting {source} ...")

        def started(_) -> None:
            self.live = live
            self.drive.source = source
            self.log.info(f"driving from {live.status()}")

        def failed(exc: BaseException) -> None:
            self._failed(f"cannot drive from {source}", exc)
            self.drive.source = "sliders"

        self.jobs.submit(f"start-{source}", live.start, started, failed)

    def _stop_live(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def frame_face(self) -> None:
        verts = self.rig.vertices(*self.drive.current).numpy() if self.drive.current else self.rig.vertices().numpy()
        face = self.rig.data.vertex_regions.get("face")
        self.stage.orbit.frame(verts[face] if face is not None and len(face) else verts)

    def set_stage_size(self, width: int, height: int) -> None:
        self.stage.window.set_size(width, height)

    # ------------------------------------------------------------------ stage input
    def handle_drop(self, paths: list[str]) -> None:
        for path in paths:
            kind = classify(path)
            if kind is DropKind.AVATAR:
                self.open_avatar(path)
            elif kind is DropKind.MOTION:
                self.load_motion(path)
            elif kind is DropKind.PORTRAIT:
                self._queue_portrait(path)
            else:
                self.log.error(f"{Path(path).name}: not an avatar (.h5), motion (.npz) or image file")

    def _queue_portrait(self, path: str) -> None:
        from savatar.viewer.portraits import check_portrait

        def done(p: Portrait) -> None:
            self.portraits.append(p)
            self.console.set_portraits(self.portraits)
            (self.log.info if p.ok else self.log.warning)(f"portrait {p.status}")

        self.jobs.submit("portrait", lambda: check_portrait(path), done,
                         lambda e: self._failed(f"{Path(path).name} could not be checked", e))

    def move_portrait(self, index: int, step: int) -> None:
        j = index + step
        if 0 <= index < len(self.portraits) and 0 <= j < len(self.portraits):
            self.portraits[index], self.portraits[j] = self.portraits[j], self.portraits[index]
            self.console.set_portraits(self.portraits)

    def remove_portrait(self, index: int) -> None:
        if 0 <= index < len(self.portraits):
            del self.portraits[index]
            self.console.set_portraits(self.portraits)

    def clear_portraits(self) -> None:
        self.portraits.clear()
        self.console.set_portraits(self.portraits)

    def build(self) -> None:
        """Build an avatar from the queued portraits on a worker; progress and cancel live."""
        from savatar.core.build.build import BuildCancelled, build_avatar

        if self._build_cancel is not None:
            self.log.warning("a build is already running")
            return
        paths = [p.path for p in self.portraits]
        if not paths:
            self.log.warning("no portraits queued: drop some on the stage first")
            return
        count = int(self.console.value(self.console.build_count))
        generator = self.console.value(self.console.build_generator).strip()
        cancel = threading.Event()
        self._build_cancel = cancel
        self._build_progress = (0.0, "starting")

        def progress(fraction: float, stage: str) -> None:  # called on the worker
            self._build_progress = (fraction, stage)

        def run():
            if generator:
                from savatar.core.build.generator import build_from_portraits
                avatar, results = build_from_portraits(generator, paths, None, progress)
            else:
                avatar, results = build_avatar(paths, count=count, progress=progress, cancel=cancel)
            return Rig.of(avatar), results

        def done(out) -> None:
            rig, results = out
            self._build_cancel = None
            for r in results:
                (self.log.info if r.ok else self.log.warning)(f"build: {r.line()}")
            self._set_avatar(rig, None)
            self._refresh_info()
            self._build_progress = (1.0, f"built {len(rig.avatar)} Gaussians from "
                                         f"{sum(r.ok for r in results)} of {len(results)} portraits: Save as... to keep it")
            self.log.info(self._build_progress[1])
            if self.console.value(self.console.refine_after):
                self.start_refine(after_build=True)

        def failed(exc: BaseException) -> None:
            self._build_cancel = None
            if isinstance(exc, BuildCancelled):
                self._build_progress = (0.0, "cancelled")
                self.log.info("build cancelled")
            else:
                self._build_progress = (0.0, f"failed: {exc}")
                self._failed("build failed", exc)

        self.jobs.submit("build", run, done, failed)

    def start_refine(self, after_build: bool = False) -> None:
        """Refine the shown avatar on a worker thread; reports come back through a slot and the
        stage shows the avatar as it improves. torch runs single-threaded in the viewer, so the
        refinement takes one core and the interface keeps the other. Frames: the portraits the
        avatar was built from (kept in its file), an image folder, or a video (tracked first, on
        a worker, with progress in the Refine panel)."""
        from savatar.core.refine.frame_sources import frames_from_images, frames_from_stored_sources, frames_from_video

        if self.refiner is not None or self._refine_prep is not None:
            self.log.warning("a refinement is already running: stop it first")
            return
        st = self.console.refine_settings(after_build)
        path = st["path"].strip()
        try:
            if st["data"] == "video":
                if not Path(path).is_file():
                    raise ValueError(f"{path or 'no video chosen'}: no such file")
                avatar = self.rig.avatar
                self._refine_prep = (0.0, f"tracking {Path(path).name}")

                def progress(done: int, total: int) -> None:  # worker thread
                    self._refine_prep = (done / total if total else 0.0, f"tracking {Path(path).name}: frame {done}/{total or '?'}")

                def tracked(frames: list) -> None:
                    self._refine_prep = None
                    self.log.info(f"{Path(path).name}: {len(frames)} tracked frames")
                    self.refine_with(frames, self._refine_config(st, len(frames)))

                def failed(exc: BaseException) -> None:
                    self._refine_prep = None
                    self._failed("cannot refine", exc)

                self.jobs.submit("track", lambda: frames_from_video(path, avatar, progress=progress), tracked, failed)
                return
            frames = frames_from_images(path) if st["data"] == "image folder" else frames_from_stored_sources(self.rig.avatar)
        except ValueError as exc:
            msg = str(exc).replace("; use --images or --video", ": choose an image folder or a video")
            self.log.error(f"cannot refine: {msg}")
            return
        except OSError as exc:
            self.log.error(f"cannot refine: {exc}")
            return
        self.refine_with(frames, self._refine_config(st, len(frames)))

    @staticmethod
    def _refine_config(st: dict, frame_count: int):
        """RefineConfig from the Refine panel's settings; the last frame is held out for the
        PSNR plot when there are more than two."""
        from savatar.core.gaussians.antispike import AntiSpikeConfig
        from savatar.core.refine.refine import RefineConfig

        spike = AntiSpikeConfig(max_anisotropy=st["anisotropy_threshold"], max_size=st["size_threshold"],
                                max_offset=st["offset_threshold"], weight_anisotropy=st["anisotropy_weight"],
                                weight_size=st["size_weight"], weight_offset=st["offset_weight"])
        return RefineConfig(iterations=st["iterations"], lambda_dssim=st["lambda_dssim"], antispike=spike,
                            regularize=st["regularize"], held_out=(frame_count - 1,) if frame_count > 2 else (),
                            checkpoint_every=0, report_every=max(1, min(10, st["iterations"] // 5)), backend="auto")

    def refine_with(self, frames: list, cfg) -> None:
        """Run a Refiner on the shown avatar in a worker thread (see start_refine)."""
        from savatar.core.refine.refine import Refiner

        try:
            refiner = Refiner(self.rig.avatar, self.rig, frames, cfg)
        except ValueError as exc:
            self.log.error(f"cannot refine: {exc}")
            return
        self.refiner, self._refine_history = refiner, []
        self.log.info(f"refining {len(self.rig.avatar)} Gaussians on {len(frames)} frames for {cfg.iterations} iterations")

        def on_report(report) -> None:  # worker thread: hand over, never touch the GUI
            self._refine_slot.put((report, refiner.current_avatar()))

        def done(report) -> None:
            self.refiner = None
            self.log.info(f"refinement ended at iteration {report.iteration}"
                          + (f", held-out PSNR in mask {report.psnr_mask:.2f} dB" if report.psnr_mask is not None else ""))

        def failed(exc: BaseException) -> None:
            self.refiner = None
            self._failed("refinement failed", exc)

        self.jobs.submit("refine", lambda: refiner.run(on_report), done, failed)

    def pause_refine(self) -> None:
        if self.refiner is None:
            return
        if self.refiner.paused:
            self.refiner.resume()
        else:
            self.refiner.pause()

    def stop_refine(self) -> None:
        if self.refiner is not None:
            self.refiner.stop()

    def _take_refine_report(self) -> bool:
        """Main thread: newest report to the plots, newest avatar to the stage; True if new."""
        got = self._refine_slot.take()
        if got is None:
            return False
        report, avatar = got
        self._refine_history.append(report)
        if report.event:
            self.log.warning(f"refinement: {report.event}")
        self.rig = Rig(avatar, self.rig.model)
        self.spikes = spike_mask(avatar, self.spike_cfg).numpy()
        self._last_key = None
        return True

    def cancel_build(self) -> None:
        if self._build_cancel is not None:
            self._build_cancel.set()

    def handle_key(self, key: str) -> None:
        if key == "reset":
            self.stage.orbit.reset()
        elif key == "frame":
            self.frame_face()
        elif key == "play":
            self.toggle_play()
        elif key == "screenshot":
            path = f"savatar-{time.strftime('%Y%m%d-%H%M%S')}.png"
            self._pending_screenshot = path
        elif key == "hud":
            self.console.toggle(self.console.show_hud)
        elif key == "fullscreen":
            self.stage.window.set_fullscreen(not self.stage.window.fullscreen)
        elif key == "quit":
            self.quit()

    def quit(self) -> None:
        self.running = False

    # ------------------------------------------------------------------ the loop
    def _read_console(self) -> None:
        c = self.console
        self.drive.strength = c.value(c.strength)
        self.drive.smoothing = c.value(c.smoothing)
        self.playback.loop = c.value(c.loop_box)
        self.playback.speed = c.value(c.speed)
        r = self.render
        r.sh_degree = c.value(c.sh_degree)
        r.scale_modifier = c.value(c.scale_mod)
        r.background = tuple(x / 255.0 for x in c.value(c.bg_color)[:3])
        r.show_mesh, r.show_centres = c.value(c.show_mesh), c.value(c.show_centres)
        r.show_hud = c.value(c.show_hud)
        r.highlight_spikes = c.value(c.highlight)
        r.occlusion = c.value(c.occlusion)
        r.quality = c.value(c.quality)
        self.stage.orbit.fov = c.value(c.fov)

    def step(self, dt: float) -> None:
        """One frame: worker results, drive, deform, sort, draw both windows."""
        self.jobs.poll()
        self._read_console()
        t0 = time.perf_counter()
        self.playback.advance(dt)
        target = None
        if self.drive.source == "motion file":
            target = self.playback.frame()
        elif self.drive.source in LIVE_SOURCES and self.live is not None:
            f = self.live.latest()
            if f is not None:
                target = (f.expr, f.pose, f.translation)
                for name, ms in f.timings.items():
                    self.timings.record(name, ms)
        params = self.drive.step(target)
        self.recorder.add(dt, params)
        t1 = time.perf_counter()
        self.timings.record("drive", (t1 - t0) * 1e3)

        camera = self.stage.camera()
        scene = (tuple(np.concatenate(params).round(6)), camera.viewmat.round(7).tobytes(), camera.width, camera.height)
        now = time.perf_counter()
        if scene != self._last_scene:
            self._last_scene, self._last_motion = scene, now
        moving = now - self._last_motion < STILL_AFTER_S
        scale = self.render.splat_scale(moving)
        splat_camera = scaled_camera(camera, scale) if scale < 1 else camera
        r = self.render
        key = scene + (scale, r.sh_degree, r.highlight_spikes, r.scale_modifier, r.occlusion, id(self.rig))
        if key != self._last_key:
            if self._last_key is None or key[0] != self._last_key[0] or key[-1] != self._last_key[-1]:
                verts, self._world = self.rig.pose(*params)
                self._mesh_verts = verts.numpy()
                self.timings.record("deform", (time.perf_counter() - t1) * 1e3)
            t2 = time.perf_counter()
            visible = None
            if r.occlusion:
                visible = visible_gaussians(torch.from_numpy(self._mesh_verts), self.rig.model.faces,
                                            self.rig.avatar.face, camera.center, self._skippable)
            self.stage.upload(self._world, splat_camera, r, self.spikes, visible)
            self.timings.record("sort", (time.perf_counter() - t2) * 1e3)
            self._last_key = key
        # A still scene is not redrawn: the window keeps showing the last frame.
        look = (key, r.background, r.show_mesh, r.show_centres, r.show_hud, r.occlusion)
        needed = bool(look != self._last_look or self.stage.needs_redraw or self._pending_screenshot
                      or self.recorder.recording)
        if needed:
            self._last_change = now
        idle = r.show_hud and not needed and now - self._last_change > IDLE_AFTER_S
        if needed or idle != self._hud_idle:
            self._hud_idle = idle
            self.stage.hud_text = self._hud(now, idle)
            centres = self._world.means.numpy() if r.show_centres else None
            occluder = push_back(self._mesh_verts, camera.center, OCCLUDER_DEPTH_MARGIN) if r.occlusion else None
            self.stage.draw(camera, r, self._mesh_verts, centres, self.timings, occluder, splat_camera)
            if self._pending_screenshot:
                self.stage.screenshot(self._pending_screenshot)
                self.log.info(f"saved {self._pending_screenshot}")
                self._pending_screenshot = None
            self.stage.flip()
            if needed:  # the idle notice is no frame of the scene: it does not count in the rate
                self.timings.drawn(time.perf_counter())
            self.stage.needs_redraw = False
            self._last_look = look
        if self.export is not None:
            try:
                next(self.export)
            except StopIteration:
                self.export = None
        t3 = time.perf_counter()
        self._update_console()
        if not self.console.render_frame():
            self.running = False
        self.timings.record("console", (time.perf_counter() - t3) * 1e3)

    def _hud(self, now: float, idle: bool) -> str:
        t = self.timings.ms
        fps = self.timings.drawn_fps(now)
        rate = "idle: nothing changed" if idle else ("  -- FPS" if fps is None else f"{fps:5.1f} FPS")
        src = self.drive.source + (f" {self.playback.name} {self.playback.time:.1f}s" if self.drive.source == "motion file" else "")
        rec = "   REC" if self.recorder.recording else ""
        live = ""
        if self.drive.source in LIVE_SOURCES:
            live = "\n" + "  ".join(f"{k} {t[k]:.1f}" for k in ("capture", "landmarks", "fit", "audio", "capture_to_params") if k in t) + " ms"
        return (f"{rate}   drive {t['drive']:.1f}  deform {t['deform']:.1f}  sort {t['sort']:.1f}  "
                f"draw {t['draw']:.1f}  console {t['console']:.1f} ms\n"
                f"{len(self.rig.avatar)} Gaussians   source: {src}{rec}{live}")

    def _update_console(self) -> None:
        c = self.console
        pb = self.playback
        if pb.motion is not None:
            c.set_motion(f"{pb.name}: {len(pb.motion)} frames, {pb.motion.duration:.1f} s", pb.fraction, pb.playing)
        c.set_record(self.recorder.recording, self.recorder.frame_count)
        c.set_source_shown(self.drive.source, self.live.status() if self.live is not None and
                           self.drive.source in LIVE_SOURCES else "")
        c.set_build(*self._build_progress)
        if self._refine_prep is not None:
            c.set_refine_preparing(*self._refine_prep)
        fresh = self._take_refine_report()
        r = self._refine_history[-1] if self._refine_history else None
        if self.refiner is not None or fresh:
            status = "" if r is None else (f"iteration {r.iteration}/{r.iterations}, {r.it_per_s:.1f} it/s, "
                                           f"ETA {r.eta_s / 60:.1f} min, spikes {100 * r.spike_fraction:.2f}%"
                                           + (f", PSNR in mask {r.psnr_mask:.2f} dB" if r.psnr_mask is not None else ""))
            c.set_refine(self._refine_history if fresh else None, r, bool(self.refiner and self.refiner.paused),
                         status if self.refiner is not None else f"finished: {status}")
        c.update_log(self.log)

    def run(self, smoke: int | None = None, screenshot: str | None = None) -> int:
        last = time.perf_counter()
        frames = 0
        while self.running:
            self.stage.dispatch_events()
            now = time.perf_counter()
            dt, last = now - last, now
            self.step(dt if smoke is None else 1 / 30)
            frames += 1
            if smoke is not None and frames >= smoke and not self.jobs.busy:
                if screenshot:
                    self.screenshots(screenshot)
                break
        return self.shutdown()

    def screenshot_stage(self, path: str | Path) -> None:
        """Draw one frame and save it (the back buffer is read before the flip)."""
        self._pending_screenshot = str(path)
        self.step(0.0)

    def screenshots(self, prefix: str) -> None:
        """Both windows as PREFIXstage.png and PREFIXconsole.png."""
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        self.screenshot_stage(f"{prefix}stage.png")
        self.console.screenshot(f"{prefix}console.png")
        self.console.render_frame()  # output_frame_buffer writes during the next frame
        self.console.render_frame()
        self.log.info(f"saved {prefix}stage.png and {prefix}console.png")

    def shutdown(self) -> int:
        """Stop every thread, keep the settings, close both windows."""
        self._stop_live()
        self.cancel_build()
        self.stop_refine()
        self.jobs.join(timeout=2.0)
        s = self.settings
        s.camera = self.stage.orbit.to_dict()
        s.stage_pos = list(self.stage.window.get_location())
        s.stage_size = list(self.stage.window.get_size())
        try:
            s.console_pos, s.console_size = self.console.geometry()
            save_settings(s)
        except Exception as exc:  # settings are a convenience: never fail the exit over them
            print(f"savatar-viewer: could not save settings: {exc}", file=sys.stderr)
        self.console.close()
        self.stage.close()
        return 0


def no_display_message(display: str | None) -> str:
    """What to do when there is no X display to open the windows on (display: the DISPLAY that
    could not be reached, None when unset)."""
    what = "DISPLAY is not set" if not display else f"cannot connect to the X display {display!r}"
    return (f"no display to open the windows on ({what}): run it on a desktop, or on a virtual screen with "
            f"`xvfb-run -a savatar-viewer ...`; for a headless check: "
            f"`xvfb-run -a savatar-viewer --smoke 30 --screenshot shot_`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="savatar-viewer",
                                     description="SpatialAvatar viewer: show and animate a 3D Gaussian head avatar.")
    parser.add_argument("--avatar", metavar="PATH", help="avatar .h5 to open (default: the bundled avatar)")
    parser.add_argument("--motion", metavar="M.npz", help="motion file to play")
    parser.add_argument("--size", nargs=2, type=int, metavar=("W", "H"), help="stage size in pixels (default 720 720)")
    parser.add_argument("--smoke", type=int, metavar="N", help="run N frames without showing windows, then exit 0 (CI)")
    parser.add_argument("--screenshot", metavar="PREFIX", help="with --smoke: save PREFIXstage.png and PREFIXconsole.png")
    args = parser.parse_args(argv)
    if args.size and min(args.size) < 64:
        parser.error("--size needs two numbers of at least 64")
    torch.set_num_threads(1)  # per-frame work is many small ops; one thread avoids pool hand-off costs

    from savatar.cli_args import UserError
    from savatar.commands.common import load_avatar_arg

    try:
        avatar = load_avatar_arg(args.avatar)
        motion = load_motion(args.motion) if args.motion else None
    except (UserError, ValueError) as exc:
        print(f"savatar-viewer: {exc}", file=sys.stderr)
        return 2
    settings, warning = load_settings()
    size = tuple(args.size or settings.stage_size or (720, 720))
    display = os.environ.get("DISPLAY")
    if sys.platform.startswith("linux") and not display:
        print(f"savatar-viewer: {no_display_message(None)}", file=sys.stderr)
        return 2
    try:
        app = App(avatar, args.avatar, size, visible=True, settings=settings, settings_warning=warning)
    except Exception as exc:  # no display, no GL 3.3: one line, not a traceback
        reason = no_display_message(display) if "Cannot connect to" in str(exc) else f"cannot open the windows: {exc}"
        print(f"savatar-viewer: {reason}", file=sys.stderr)
        return 2
    if motion is not None:
        app.playback.load(motion.remap(app.rig.data.expr_names), Path(args.motion).name)
        app.drive.source = "motion file"
    return app.run(args.smoke, args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
