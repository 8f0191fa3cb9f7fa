"""`savatar-viewer`: two windows, one process, one main loop.

The stage (pyglet + moderngl) draws the avatar; the console (Dear PyGui) holds the panels and
hands user actions to one controller per concern: avatar files and exports (viewer.files),
driving and motion (viewer.driving), side-by-side recordings of a driving video
(viewer.reenacting), building (viewer.building), refining (viewer.refining).
Long work runs on worker threads (viewer.workers.Jobs) and reports through tasks
(viewer.tasks); its results come back to this loop, which is the only place that swaps the
avatar or touches GL and Dear PyGui."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from savatar.core.drive.motion import load_motion
from savatar.core.gaussians.facing import skippable_faces, visible_gaussians
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.gaussians.rig import Rig
from savatar.core.render.camera import scaled_camera
from savatar.commands import build_video as video_cli  # a video's refinement as `savatar build --video`'s
from savatar.viewer.building import Building
from savatar.viewer.driving import LIVE_SOURCES, Driving, fit_quality_line
from savatar.viewer.drops import DropKind, classify
from savatar.viewer.files import AvatarFiles
from savatar.viewer.log import Log
from savatar.viewer.orbit import Orbit
from savatar.viewer.reenacting import SideBySideRecorder
from savatar.viewer.refining import FrameChoice, FrameKind, Refining, VideoPlan
from savatar.viewer.settings import Settings, load_settings, save_settings
from savatar.viewer.shown import ShownAvatar
from savatar.viewer.stage_backends import (
    STAGE_BACKENDS,
    GLBackend,
    Posed,
    check_gsplat,
    cpu_backend,
    gsplat_backend,
    gsplat_problem,
    resolve_stage_backend,
    stage_scale,
)
from savatar.viewer.state import RenderSettings, StageTimings
from savatar.viewer.tasks import Tasks
from savatar.viewer.workers import Jobs

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
    """The two windows, the main loop and the glue between them; what the console asks for goes
    to the controllers (files, driving, building, refining) or, for the stage, to the App."""

    def __init__(self, avatar: GaussianAvatar, avatar_path: str | None, size: tuple[int, int],
                 visible: bool = True, settings: Settings | None = None, settings_warning: str | None = None,
                 stage_backend: str | None = None):
        """stage_backend: one of STAGE_BACKENDS (default: the settings' last working one)."""
        from savatar.viewer.console import Actions, Console
        from savatar.viewer.stage import Stage, StageCallbacks

        self.log = Log()
        self.jobs = Jobs()
        self.tasks = Tasks()
        self.settings = settings or Settings()
        self.render = RenderSettings()
        self.timings = StageTimings()
        self.running = True
        self._last_key: tuple | None = None
        self._posed: Posed | None = None
        self._pose_key: tuple | None = None
        self._mesh_np: np.ndarray | None = None
        self.backend = GLBackend()  # until the Render panel's choice is applied (console.connect)
        self._backend_serial = 0
        self._requested: str | None = None
        self._last_look: tuple | None = None
        self._last_scene: tuple | None = None
        self._last_motion = 0.0
        self._last_change = 0.0  # when a redraw was last needed for anything but the HUD
        self._hud_idle = False
        self._pending_screenshot: str | None = None

        self.stage = Stage(size, StageCallbacks(self.handle_drop, self.handle_key, self.quit), visible,
                           tuple(self.settings.stage_pos) if self.settings.stage_pos else None)
        if self.settings.camera:
            self.stage.orbit = Orbit.from_dict(self.settings.camera)
        self.shown = ShownAvatar(Rig.of(avatar), avatar_path)
        self.shown.on_swap(self._avatar_swapped)
        self._avatar_swapped(self.shown.rig, avatar_path)
        self.console = Console(self.shown.rig.data.expr_names, tuple(self.settings.console_size),
                               tuple(self.settings.console_pos) if self.settings.console_pos else None,
                               stage_backend=stage_backend or self.settings.stage_backend)
        self.driving = Driving(self.shown, self.log, self.jobs, self.console)
        self.side_by_side = SideBySideRecorder(self.shown, self.driving, self.log, self.stage)
        self.files = AvatarFiles(self.shown, self.log, self.jobs, self.tasks, self.settings, self.console,
                                 self.stage, self.driving, lambda: self.render.background)
        self.refining = Refining(self.shown, self.log, self.jobs, self.tasks)
        self.building = Building(self.shown, self.log, self.jobs, self.tasks, self.console, self._refine_after_build)
        self.console.connect(Actions(self.files, self.driving, self.side_by_side, self.building, self.refining, self))
        if settings_warning:
            self.log.warning(settings_warning)
        self.log.info(f"showing {avatar_path or 'the bundled default avatar'} ({len(avatar)} Gaussians)")

    def _avatar_swapped(self, rig: Rig, path: str | None) -> None:
        """Another avatar: the stage's mesh overlay and occluder, the faces it may skip."""
        data = rig.data
        # One light-blue tint, so the overlay reads as the mesh and not as more skin.
        self.stage.set_mesh(data.faces, np.tile(np.float32([0.35, 0.6, 1.0]), (len(data.v_template), 1)),
                            occluder_faces(data))
        self._skippable = skippable_faces(data)

    def _refine_after_build(self, video: str | None) -> None:
        """A build from a video's frames is refined against that video, for the Build panel's
        minutes; one from portraits when the Build panel asks for it."""
        if video is not None:
            config, minutes = self.console.video_refine()
            self.console.show_panel("Refine")  # where it shows: status, losses, held-out PSNR
            self.console.show_frame_choice(FrameChoice(FrameKind.VIDEO, video))
            self.refining.start_video(video, replace(config, report_every=video_cli.EVALUATE_EVERY), VideoPlan(
                minutes, video_cli.REFINE_SIZE, video_cli.REFINE_FRAMES, video_cli.HOLD_OUT,
                video_cli.MIN_FRAMES_TO_HOLD_OUT, video_cli.PATIENCE))
            return
        config = self.console.refine_after_build()
        if config is not None:
            self.refining.start(FrameChoice(), config)

    # ------------------------------------------------------------------ stage actions (from the console)
    def frame_face(self) -> None:
        rig, current = self.shown.rig, self.driving.drive.current
        verts = rig.vertices(*current).numpy() if current else rig.vertices().numpy()
        face = rig.data.vertex_regions.get("face")
        self.stage.orbit.frame(verts[face] if face is not None and len(face) else verts)

    def set_stage_size(self, width: int, height: int) -> None:
        self.stage.window.set_size(width, height)

    def set_render(self, settings: RenderSettings) -> None:
        self.render = settings
        if settings.backend != self._requested:
            self.request_backend(settings.backend)

    # ------------------------------------------------------------------ stage backends
    def request_backend(self, name: str) -> None:
        """Draw the stage with backend name (STAGE_BACKENDS) from the next frame on; the camera
        and the avatar stay. gsplat loads on a worker (its first use may compile its CUDA code)
        while the current backend keeps drawing; if it cannot load, one line in the Log and gl."""
        self._requested = name
        try:
            resolved = resolve_stage_backend(name)
        except ValueError as exc:
            self.log.error(f"{exc}; the stage draws with gl")
            resolved = "gl"
        if resolved != "gsplat":
            self._use(GLBackend() if resolved == "gl" else cpu_backend())
            return
        problem = gsplat_problem()
        if problem is not None:
            self._fall_back(f"gsplat stage backend unavailable: {problem}")
            return
        self.console.set_stage_backend(name, f"loading gsplat (its first use here compiles its CUDA code); "
                                             f"drawing with {self.backend.label} meanwhile")
        self.jobs.submit("gsplat stage", check_gsplat, lambda _: self._gsplat_loaded(name),
                         lambda exc: self._gsplat_failed(name, exc))

    def _gsplat_loaded(self, requested: str) -> None:
        if requested != self._requested:  # another choice came meanwhile
            return
        try:
            self.stage.window.switch_to()  # interop registers the stage's texture in its GL context
            backend, no_interop = gsplat_backend(self.stage.frame, self.stage.framebuffer_size())
        except Exception as exc:  # CUDA errors come as several exception types
            self._fall_back(f"gsplat stage backend unavailable: {exc}")
            return
        if no_interop:
            self.log.info(f"gsplat stage: no CUDA-GL interop ({no_interop}); one device-to-host copy per frame")
        self._use(backend)

    def _gsplat_failed(self, requested: str, exc: BaseException) -> None:
        if requested == self._requested:
            self._fall_back(f"gsplat stage backend unavailable: {type(exc).__name__}: {exc}")

    def _fall_back(self, why: str) -> None:
        """One line in the Log, and gl (the panel shows gl too)."""
        self.log.error(f"{why}; the stage draws with gl")
        self._requested = "gl"
        self._use(GLBackend())

    def _use(self, backend) -> None:
        if backend is not self.backend:
            self.backend.release()
        self.backend = backend
        self._backend_serial += 1
        self.stage.needs_redraw = True
        if self._requested is not None:
            self.settings.stage_backend = self._requested
            self.console.set_stage_backend(self._requested, f"drawing with {backend.label}")

    def _mesh_verts(self) -> np.ndarray:
        """The posed mesh (V, 3) on the CPU (copied from the device once per pose, when asked)."""
        if self._mesh_np is None:
            self._mesh_np = self.backend.host(self._posed.verts)
        return self._mesh_np

    def _make_frame(self, params, camera, splat_camera) -> None:
        """Pose (when the parameters, the avatar or the backend changed) and make the stage's
        next picture: gl sorts and uploads splats, an image backend rasterizes into the texture.
        An image backend that fails leaves one line in the Log and gl draws instead."""
        backend, r, shown = self.backend, self.render, self.shown
        try:
            t1 = time.perf_counter()
            pose_key = (self._last_scene[0], shown.version, self._backend_serial)
            if pose_key != self._pose_key:
                self._posed = backend.pose(shown.rig, shown.version, params)
                self._pose_key, self._mesh_np = pose_key, None
                if backend.kind == "gl":
                    self.timings.record("deform", (time.perf_counter() - t1) * 1e3)
            t2 = time.perf_counter()
            visible = None
            if r.occlusion and backend.uses_occlusion:
                visible = visible_gaussians(torch.from_numpy(self._mesh_verts()), shown.rig.model.faces,
                                            shown.rig.avatar.face, camera.center, self._skippable)
            if backend.kind == "gl":
                self.stage.upload(self._posed.world, splat_camera, r, shown.spikes, visible)
                self.timings.record("sort", (time.perf_counter() - t2) * 1e3)
                return
            pixels = backend.rasterize(self._posed.world, splat_camera, r, shown.spikes, shown.version, visible)
            self.stage.show_image(backend, pixels)
            for stage, ms in backend.take_times().items():
                self.timings.record(stage, ms)
        except Exception as exc:
            if backend.kind == "gl":
                raise
            self.log.error(f"{backend.name} stage backend failed: {type(exc).__name__}: {exc}; the stage draws with gl")
            self._requested = "gl"
            self._use(GLBackend())
            self._make_frame(params, camera, splat_camera)

    def set_fov(self, degrees: float) -> None:
        self.stage.orbit.fov = degrees

    # ------------------------------------------------------------------ stage input
    def handle_drop(self, paths: list[str]) -> None:
        for path in paths:
            kind = classify(path)
            if kind is DropKind.AVATAR:
                self.files.open(path)
            elif kind is DropKind.MOTION:
                self.driving.load_motion(path)
            elif kind is DropKind.PORTRAIT:
                self.building.queue_portrait(path)
            elif kind is DropKind.VIDEO:
                self.console.show_panel("Build")
                self.building.queue_video(path, self.console.video_sources())
            else:
                self.log.error(f"{Path(path).name}: not an avatar (.h5), motion (.npz), image or video file")

    def handle_key(self, key: str) -> None:
        if key == "reset":
            self.stage.orbit.reset()
        elif key == "frame":
            self.frame_face()
        elif key == "play":
            self.driving.toggle_play()
        elif key == "screenshot":
            path = f"savatar-{time.strftime('%Y%m%d-%H%M%S')}.png"
            self._pending_screenshot = path
        elif key == "hud":
            self.console.toggle_hud()
        elif key == "fullscreen":
            self.stage.window.set_fullscreen(not self.stage.window.fullscreen)
        elif key == "quit":
            self.quit()

    def quit(self) -> None:
        self.running = False

    # ------------------------------------------------------------------ the loop
    def step(self, dt: float) -> None:
        """One frame: worker results, drive, deform, sort, draw both windows."""
        self.jobs.poll()
        t0 = time.perf_counter()
        params = self.driving.step(dt, self.timings)
        t1 = time.perf_counter()
        self.timings.record("drive", (t1 - t0) * 1e3)

        camera = self.stage.camera()
        scene = (tuple(np.concatenate(params).round(6)), camera.viewmat.round(7).tobytes(), camera.width, camera.height)
        now = time.perf_counter()
        if scene != self._last_scene:
            self._last_scene, self._last_motion = scene, now
        moving = now - self._last_motion < STILL_AFTER_S
        scale = stage_scale(self.render, moving, self.backend.name)
        splat_camera = scaled_camera(camera, scale) if scale < 1 else camera
        r, shown = self.render, self.shown
        key = scene + (scale, r.sh_degree, r.highlight_spikes, r.scale_modifier, r.occlusion, shown.version,
                       self._backend_serial)
        if key != self._last_key:
            self._make_frame(params, camera, splat_camera)
            self._last_key = key
        # A still scene is not redrawn: the window keeps showing the last frame.
        look = (key, r.background, r.show_mesh, r.show_centres, r.show_hud, r.occlusion)
        needed = bool(look != self._last_look or self.stage.needs_redraw or self._pending_screenshot
                      or self.driving.recorder.recording)
        if needed:
            self._last_change = now
        idle = r.show_hud and not needed and now - self._last_change > IDLE_AFTER_S
        if needed or idle != self._hud_idle:
            self._hud_idle = idle
            self.stage.hud_text = self._hud(now, idle)
            centres = self.backend.host(self._posed.world.means) if r.show_centres else None
            occluder = (push_back(self._mesh_verts(), camera.center, OCCLUDER_DEPTH_MARGIN)
                        if r.occlusion and self.backend.kind == "gl" else None)
            mesh = self._mesh_verts() if r.show_mesh else None
            self.stage.draw(camera, r, mesh, centres, self.timings, occluder, splat_camera)
            if self._pending_screenshot:
                self.stage.screenshot(self._pending_screenshot)
                self.log.info(f"saved {self._pending_screenshot}")
                self._pending_screenshot = None
            self.stage.flip()
            if needed:  # the idle notice is no frame of the scene: it does not count in the rate
                self.timings.drawn(time.perf_counter())
            self.stage.needs_redraw = False
            self._last_look = look
        self.files.advance_export()
        self.side_by_side.step()
        t3 = time.perf_counter()
        self._update_console()
        if not self.console.render_frame():
            self.running = False
        self.timings.record("console", (time.perf_counter() - t3) * 1e3)

    def _hud(self, now: float, idle: bool) -> str:
        t = self.timings.ms
        fps = self.timings.drawn_fps(now)
        rate = "idle: nothing changed" if idle else ("  -- FPS" if fps is None else f"{fps:5.1f} FPS")
        d = self.driving
        source = d.drive.source
        src = source + (f" {d.playback.name} {d.playback.time:.1f}s" if source == "motion file" else "")
        rec = "   REC" if d.recorder.recording else ""
        live = ""
        if source in LIVE_SOURCES:
            live = "\n" + "  ".join(f"{k} {t[k]:.1f}" for k in ("capture", "landmarks", "fit", "audio", "capture_to_params") if k in t) + " ms"
            live += fit_quality_line(d.live.latest() if d.live is not None else None)
        made = ("sort",) if self.backend.kind == "gl" else ("raster", "transfer")
        stages = "  ".join(f"{k} {t.get(k, 0.0):.1f}" for k in ("drive", "deform", *made, "draw", "console"))
        return (f"{rate}   {self.backend.label}: {stages} ms\n"
                f"{len(self.shown.rig.avatar)} Gaussians   source: {src}{rec}{live}")

    def _update_console(self) -> None:
        """What changed since the last frame, to the console: tasks, motion, recording, source,
        refinement plots, log."""
        c, d = self.console, self.driving
        for panel, state in self.tasks.changed():
            c.show_task(panel, state)
        pb = d.playback
        if pb.motion is not None:
            c.set_motion(f"{pb.name}: {len(pb.motion)} frames, {pb.motion.duration:.1f} s", pb.fraction, pb.playing)
        c.set_record(d.recorder.recording, d.recorder.frame_count)
        c.set_source_shown(d.drive.source, d.live_status())
        c.set_side_by_side(d.video_source() is not None, self.side_by_side.recording, self.side_by_side.status)
        if self.refining.take_report():
            c.set_refine_plots(self.refining.history)
        c.set_refine_paused(self.refining.paused)
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
        self.side_by_side.stop()
        self.driving.stop_live()
        self.building.cancel()
        self.refining.stop()
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
    parser.add_argument("--stage-backend", choices=STAGE_BACKENDS, metavar="|".join(STAGE_BACKENDS),
                        help="what draws the stage: auto (gsplat with a CUDA GPU, else gl; the default), gl (OpenGL "
                             "splatting), gsplat (CUDA), cpu (the CPU rasterizer, slow); default: the last one used")
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
        app = App(avatar, args.avatar, size, visible=True, settings=settings, settings_warning=warning,
                  stage_backend=args.stage_backend)
    except Exception as exc:  # no display, no GL 3.3: one line, not a traceback
        reason = no_display_message(display) if "Cannot connect to" in str(exc) else f"cannot open the windows: {exc}"
        print(f"savatar-viewer: {reason}", file=sys.stderr)
        return 2
    if motion is not None:
        app.driving.play(motion, Path(args.motion).name)
    return app.run(args.smoke, args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
