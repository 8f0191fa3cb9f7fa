"""The console: a Dear PyGui window with the panels (Avatar, Drive, Motion, Render, Build,
Refine, Log). It only shows state and forwards user actions, as typed values, to the app's
controllers (Actions); every widget id is a Python attribute, not a magic string."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import dearpygui.dearpygui as dpg
import numpy as np

from savatar.core.gaussians.antispike import AntiSpikeConfig
from savatar.core.refine.refine import RefineConfig
from savatar.core.build.source_frames import DEFAULT_SOURCES
from savatar.viewer.drops import VIDEO_SUFFIXES
from savatar.viewer.glx_context import SavedContext
from savatar.viewer.refining import FrameChoice, FrameKind
from savatar.viewer.stage_backends import STAGE_BACKENDS
from savatar.viewer.state import DRIVE_SOURCES, RenderSettings
from savatar.viewer.tasks import TaskState

if TYPE_CHECKING:
    from savatar.viewer.building import Building
    from savatar.viewer.driving import Driving
    from savatar.viewer.files import AvatarFiles
    from savatar.viewer.portraits import Portrait
    from savatar.viewer.reenacting import SideBySideRecorder
    from savatar.viewer.refining import Refining

# Expression components grouped by face region, by their ARKit-style name prefixes.
REGION_PREFIXES = (("Eyes", ("eye",)), ("Brows", ("brow",)), ("Mouth", ("mouth",)),
                   ("Cheeks and nose", ("cheek", "nose")), ("Jaw", ("jaw",)))
# What the Refine panel's path field holds for each source of frames.
REFINE_PATH_HINTS = {FrameKind.STORED: "", FrameKind.IMAGES: "images + params.npz",
                     FrameKind.VIDEO: "a video of this person"}
# A video's build is refined for this long by default (the CLI's whole `build --video` takes
# 2.5 minutes; here the viewer keeps the build's avatar on screen meanwhile and refines on one core).
VIDEO_REFINE_MINUTES = 2.0
VIDEO_REFINE_FIRST_GUESS = 300  # iterations: shapes the first steps' learning rates until the pace is known
LEVEL_COLOURS = {"info": (200, 200, 200), "warning": (240, 200, 80), "error": (255, 110, 110)}
POSE_SLIDERS = (("jaw", 2, ("open", "side", "twist")), ("neck", 1, ("pitch", "yaw", "roll")),
                ("head", 0, ("pitch", "yaw", "roll")), ("eyes", 3, ("pitch", "yaw", "-")))


class StageActions(Protocol):
    """What the console asks of the app itself (viewer.app.App)."""

    def frame_face(self) -> None: ...
    def set_stage_size(self, width: int, height: int) -> None: ...
    def set_render(self, settings: RenderSettings) -> None: ...
    def set_fov(self, degrees: float) -> None: ...


@dataclass(frozen=True)
class Actions:
    """Where the console's buttons, sliders and fields go: one controller per concern."""

    files: AvatarFiles
    driving: Driving
    side_by_side: SideBySideRecorder
    building: Building
    refining: Refining
    stage: StageActions


@dataclass(frozen=True)
class TaskView:
    """The one way a task shows: a progress bar and a status line under it."""

    bar: int
    text: int


class Console:
    """Built before the controllers (they show things in it), connected to them after."""

    def __init__(self, expr_names: list[str], size: tuple[int, int] = (560, 860),
                 position: tuple[int, int] | None = None, stage_backend: str = "auto"):
        """stage_backend: the Render panel's backend at start (one of STAGE_BACKENDS)."""
        self.actions: Actions | None = None
        self._stage_backend = stage_backend if stage_backend in STAGE_BACKENDS else "auto"
        self.expr_names = list(expr_names)
        dpg.create_context()
        dpg.create_viewport(title="SpatialAvatar — console", width=size[0], height=size[1], vsync=False)
        if position:
            dpg.set_viewport_pos(list(position))
        self.expr_sliders: list[int] = []
        self.pose_sliders: dict[int, int] = {}
        self.trans_sliders: list[int] = []
        self.task_views: dict[str, TaskView] = {}
        self._log_version = -1
        self._paused_shown = False
        self._side_by_side_shown: tuple[bool, bool, str] | None = None
        self._build()
        dpg.setup_dearpygui()
        dpg.show_viewport()
        self._gl = SavedContext()

    def connect(self, actions: Actions) -> None:
        """From now on the widgets act on these controllers. The app starts from the settings
        the widgets show (the field of view too: the slider's, not the saved camera's), told the
        way a user's change would tell it."""
        self.actions = actions
        g = dpg.get_value
        actions.driving.set_strength(g(self.strength))
        actions.driving.set_smoothing(g(self.smoothing))
        actions.driving.set_loop(g(self.loop_box))
        actions.driving.set_speed(g(self.speed))
        actions.stage.set_fov(g(self.fov))
        self._render_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        panels = (("Avatar", self._avatar_panel), ("Drive", self._drive_panel), ("Motion", self._motion_panel),
                  ("Render", self._render_panel), ("Build", self._build_panel), ("Refine", self._refine_panel))
        self.tabs: dict[str, int] = {}
        with dpg.window(label="SpatialAvatar") as self.root:
            with dpg.tab_bar() as self.tab_bar:
                for name, build in panels:
                    with dpg.tab(label=name) as tab:
                        build()
                    self.tabs[name] = tab
            dpg.add_separator()
            dpg.add_text("Log")
            with dpg.child_window(height=170, horizontal_scrollbar=True) as self.log_box:
                pass
        dpg.set_primary_window(self.root, True)
        self._file_dialogs()

    def _task_view(self, panel: str) -> None:
        self.task_views[panel] = TaskView(dpg.add_progress_bar(default_value=0.0, width=-1), dpg.add_text("", wrap=0))

    def _file_dialogs(self) -> None:
        self.dialogs = {}

        def dialog(name: str, exts: tuple[str, ...], save: bool, folder: bool = False):
            with dpg.file_dialog(show=False, width=520, height=380, modal=True,
                                 callback=lambda s, a: self._on_dialog(name, a), directory_selector=folder) as d:
                for ext in exts:
                    dpg.add_file_extension(ext)
                dpg.add_file_extension(".*")
            self.dialogs[name] = d

        dialog("open", (".h5",), False)
        dialog("save_as", (".h5",), True)
        dialog("export_ply", (".ply",), True)
        dialog("export_video", (".mp4",), True)
        dialog("load_motion", (".npz",), False)
        dialog("save_recording", (".npz",), True)
        dialog("audio_file", (".wav", ".flac", ".ogg"), False)
        dialog("side_by_side", (".mp4",), True)
        dialog("refine_video", (".mp4", ".mov", ".avi", ".mkv", ".webm"), False)
        dialog("refine_folder", (), False, folder=True)
        dialog("build_video", tuple(sorted(VIDEO_SUFFIXES)), False)

    def _on_dialog(self, name: str, app_data: dict) -> None:
        path = app_data.get("file_path_name") if isinstance(app_data, dict) else None
        if not path:
            return
        a = self.actions
        handler = {"open": a.files.open, "save_as": a.files.save,
                   "export_ply": a.files.export_ply, "export_video": a.files.export_video,
                   "load_motion": a.driving.load_motion, "save_recording": a.driving.save_recording,
                   "audio_file": self.choose_audio, "side_by_side": a.side_by_side.start,
                   "refine_video": lambda p: dpg.set_value(self.refine_path, p),
                   "refine_folder": lambda p: dpg.set_value(self.refine_path, p),
                   "build_video": lambda p: a.building.queue_video(p, self.video_sources())}[name]
        handler(path)

    def choose_audio(self, path: str) -> None:
        dpg.set_value(self.audio_path, path)
        dpg.set_value(self.source_combo, "audio file")
        self._set_source("audio file")

    def _set_source(self, source: str) -> None:
        self.actions.driving.set_source(source, dpg.get_value(self.video_device), dpg.get_value(self.audio_path))

    def set_source_shown(self, source: str, status: str) -> None:
        if dpg.get_value(self.source_combo) != source:
            dpg.set_value(self.source_combo, source)
        dpg.set_value(self.source_status, status)

    def _show(self, name: str) -> None:
        dpg.show_item(self.dialogs[name])

    def _avatar_panel(self) -> None:
        with dpg.group(horizontal=True):
            dpg.add_button(label="Open...", callback=lambda: self._show("open"))
            dpg.add_button(label="Save", callback=lambda: self.actions.files.save(None))
            dpg.add_button(label="Save as...", callback=lambda: self._show("save_as"))
        with dpg.group(horizontal=True):
            dpg.add_button(label="Export PLY...", callback=lambda: self._show("export_ply"))
            dpg.add_button(label="Export MP4...", callback=lambda: self._show("export_video"))
        dpg.add_text("Recent files")
        self.recent_list = dpg.add_listbox(items=[], num_items=5, width=-1,
                                           callback=lambda s, a: self.actions.files.open(a))
        dpg.add_separator()
        self.info_text = dpg.add_text("")
        self._task_view("Avatar")

    def _drive_panel(self) -> None:
        self.source_combo = dpg.add_combo(list(DRIVE_SOURCES), default_value="sliders", label="source", width=200,
                                          callback=lambda s, a: self._set_source(a))
        self.video_device = dpg.add_input_text(label="webcam index or video file", default_value="0", width=200)
        with dpg.group(horizontal=True):
            dpg.add_button(label="Audio file...", callback=lambda: self._show("audio_file"))
            self.audio_path = dpg.add_text("")
        self.source_status = dpg.add_text("")
        with dpg.group(horizontal=True):
            self.side_by_side_button = dpg.add_button(label="Record side-by-side...", enabled=False,
                                                      callback=lambda: self._side_by_side_clicked())
            self.side_by_side_text = dpg.add_text("")
        dpg.bind_item_theme(self.side_by_side_button, self._disabled_theme())
        with dpg.group(horizontal=True):
            dpg.add_button(label="Reset", callback=lambda: self.actions.driving.reset())
            dpg.add_button(label="Neutral", callback=lambda: self.actions.driving.set_neutral())
            dpg.add_button(label="Frame face (F)", callback=lambda: self.actions.stage.frame_face())
        self.strength = dpg.add_slider_float(label="expression strength", default_value=1.0, min_value=0.0, max_value=2.0,
                                             callback=lambda s, a: self.actions.driving.set_strength(a))
        self.smoothing = dpg.add_slider_float(label="smoothing", default_value=0.0, min_value=0.0, max_value=0.95,
                                              callback=lambda s, a: self.actions.driving.set_smoothing(a))
        with dpg.collapsing_header(label="Head, neck, jaw and eyes", default_open=True):
            for label, joint, axes in POSE_SLIDERS:
                for k, axis in enumerate(axes):
                    if axis == "-":
                        continue
                    idx = 3 * joint + k
                    limit = 0.6 if label != "jaw" else 0.4
                    self.pose_sliders[idx] = dpg.add_slider_float(
                        label=f"{label} {axis}", min_value=-limit, max_value=limit, width=260,
                        callback=lambda s, a, u: self._set_pose(u, a), user_data=idx)
            for k, axis in enumerate("xyz"):
                self.trans_sliders.append(dpg.add_slider_float(
                    label=f"translate {axis} (m)", min_value=-0.1, max_value=0.1, width=260,
                    callback=lambda s, a, u: self.actions.driving.set_translation(u, a), user_data=k))
        self.expr_sliders = [0] * len(self.expr_names)
        used = set()
        for region, prefixes in REGION_PREFIXES + (("Other", ("",)),):
            members = [i for i, n in enumerate(self.expr_names) if i not in used and n.lower().startswith(prefixes)]
            if not members:
                continue
            used.update(members)
            with dpg.collapsing_header(label=f"{region} ({len(members)})", default_open=region == "Mouth"):
                for i in members:
                    self.expr_sliders[i] = dpg.add_slider_float(
                        label=self.expr_names[i], min_value=-0.5 if region == "Other" else 0.0, max_value=1.0,
                        width=260, callback=lambda s, a, u: self.actions.driving.set_expr(u, a), user_data=i)

    @staticmethod
    def _disabled_theme() -> int:
        """Greyed out when disabled (Dear PyGui draws disabled buttons like the others)."""
        with dpg.theme() as theme:
            with dpg.theme_component(dpg.mvButton, enabled_state=False):
                dpg.add_theme_color(dpg.mvThemeCol_Text, (115, 115, 115))
                for part in (dpg.mvThemeCol_Button, dpg.mvThemeCol_ButtonHovered, dpg.mvThemeCol_ButtonActive):
                    dpg.add_theme_color(part, (45, 45, 48))
        return theme

    def _side_by_side_clicked(self) -> None:
        recorder = self.actions.side_by_side
        if recorder.recording:
            recorder.stop()
        else:
            self._show("side_by_side")

    def set_side_by_side(self, available: bool, recording: bool, status: str) -> None:
        """The side-by-side control: usable while a video source drives, or to stop; told every
        frame, so widgets change only when what they show does."""
        shown = (available or recording, recording, status)
        if shown == self._side_by_side_shown:
            return
        self._side_by_side_shown = shown
        dpg.configure_item(self.side_by_side_button, enabled=shown[0],
                           label="Stop side-by-side" if recording else "Record side-by-side...")
        dpg.set_value(self.side_by_side_text, status)

    def _set_pose(self, idx: int, value: float) -> None:
        self.actions.driving.set_pose(idx, value)
        if idx in (9, 10):  # both eyes look together
            self.actions.driving.set_pose(idx + 3, value)

    def _motion_panel(self) -> None:
        with dpg.group(horizontal=True):
            dpg.add_button(label="Load motion...", callback=lambda: self._show("load_motion"))
            self.play_button = dpg.add_button(label="Play", callback=lambda: self.actions.driving.toggle_play())
            self.loop_box = dpg.add_checkbox(label="loop", default_value=True,
                                             callback=lambda s, a: self.actions.driving.set_loop(a))
        self.motion_text = dpg.add_text("no motion loaded")
        self.timeline = dpg.add_slider_float(label="time", min_value=0.0, max_value=1.0, width=-80,
                                             callback=lambda s, a: self.actions.driving.seek(a))
        self.speed = dpg.add_slider_float(label="speed", default_value=1.0, min_value=0.1, max_value=3.0,
                                          callback=lambda s, a: self.actions.driving.set_speed(a))
        dpg.add_separator()
        with dpg.group(horizontal=True):
            self.record_button = dpg.add_button(label="Record", callback=lambda: self.actions.driving.toggle_record())
            dpg.add_button(label="Save recording...", callback=lambda: self._show("save_recording"))
        self.record_text = dpg.add_text("")

    def _render_panel(self) -> None:
        changed = lambda: self._render_changed()  # noqa: E731
        self.backend = dpg.add_combo(list(STAGE_BACKENDS), default_value=self._stage_backend, label="stage backend",
                                     width=160, callback=changed)
        dpg.add_text("auto: gsplat with a CUDA GPU, else gl (OpenGL splatting); cpu: the CPU rasterizer (slow, "
                     "a quarter of the resolution while moving)", wrap=480)
        self.backend_status = dpg.add_text("", wrap=480)
        self.resolution = dpg.add_combo(["512x512", "720x720", "1024x768", "1280x720"], default_value="720x720",
                                        label="stage size", width=160,
                                        callback=lambda s, a: self.actions.stage.set_stage_size(*map(int, a.split("x"))))
        self.quality = dpg.add_combo(["auto", "full", "half"], default_value="auto", label="splat resolution", width=160,
                                     callback=changed)
        dpg.add_text("auto: lower resolution while the avatar or camera moves (gl half, cpu a quarter, gsplat full), "
                     "full when still", wrap=480)
        self.sh_degree = dpg.add_slider_int(label="SH degree", default_value=3, min_value=0, max_value=3, callback=changed)
        self.scale_mod = dpg.add_slider_float(label="scale modifier", default_value=1.0, min_value=0.1, max_value=2.0,
                                              callback=changed)
        self.fov = dpg.add_slider_float(label="field of view", default_value=30.0, min_value=10.0, max_value=70.0,
                                        callback=lambda s, a: self.actions.stage.set_fov(a))
        self.bg_color = dpg.add_color_edit(label="background", default_value=(237, 240, 245, 255), no_alpha=True,
                                           callback=changed)
        self.show_mesh = dpg.add_checkbox(label="mesh overlay", callback=changed)
        self.show_centres = dpg.add_checkbox(label="Gaussian centres", callback=changed)
        self.highlight = dpg.add_checkbox(label="highlight spikes (red)", callback=changed)
        self.show_hud = dpg.add_checkbox(label="HUD (H)", default_value=True, callback=changed)
        self.occlusion = dpg.add_checkbox(label="skip splats hidden behind the head or facing away (faster; gl, cpu)",
                                          default_value=True, callback=changed)
        self.spike_text = dpg.add_text("")

    def _render_changed(self) -> None:
        """Any Render panel setting changed: all of them, typed, to the app (read here, on a
        change, never per frame; the colour is read with get_value, which gives 0-255 like the
        default, where the callback's app_data would give 0-1)."""
        g = dpg.get_value
        self.actions.stage.set_render(RenderSettings(
            backend=g(self.backend), sh_degree=g(self.sh_degree), scale_modifier=g(self.scale_mod),
            background=tuple(x / 255.0 for x in g(self.bg_color)[:3]), show_mesh=g(self.show_mesh),
            show_centres=g(self.show_centres), highlight_spikes=g(self.highlight), show_hud=g(self.show_hud),
            occlusion=g(self.occlusion), quality=g(self.quality)))

    def set_stage_backend(self, choice: str, status: str) -> None:
        """The backend the panel shows (after a fall-back: gl) and what draws the stage now."""
        dpg.set_value(self.backend, choice)
        dpg.set_value(self.backend_status, status)

    def toggle_hud(self) -> None:
        dpg.set_value(self.show_hud, not dpg.get_value(self.show_hud))
        self._render_changed()

    def _build_panel(self) -> None:
        dpg.add_text("Drop portraits on the stage (any number, any order), or a selfie video (10-20 s of the face "
                     "turning) to take its best frames from, then Build. A video's build is refined against it.",
                     wrap=480)
        with dpg.group(horizontal=True):
            dpg.add_button(label="Video...", callback=lambda: self._show("build_video"))
            self.video_sources_field = dpg.add_input_int(label="frames to choose", default_value=DEFAULT_SOURCES,
                                                         min_value=1, max_value=12, min_clamped=True, max_clamped=True,
                                                         width=90)
            self.video_minutes = dpg.add_input_float(label="min refining", default_value=VIDEO_REFINE_MINUTES,
                                                     min_value=0.1, max_value=120.0, min_clamped=True, max_clamped=True,
                                                     step=0.5, format="%.1f", width=90)
        with dpg.child_window(height=300) as self.portrait_box:  # a video's 4 frames without scrolling
            pass
        self.build_generator = dpg.add_input_text(label="generator checkpoint (empty: parameter-free)", width=260)
        self.build_count = dpg.add_input_int(label="Gaussians", default_value=60000, min_value=1000, max_value=500000,
                                             min_clamped=True, max_clamped=True, step=10000, width=160)
        with dpg.group(horizontal=True):
            self.refine_after = dpg.add_checkbox(label="refine after build for")
            self.refine_after_iters = dpg.add_input_int(default_value=300, min_value=10, max_value=100000,
                                                        min_clamped=True, step=100, width=100)
            dpg.add_text("iterations")
        with dpg.group(horizontal=True):
            self.build_button = dpg.add_button(label="Build", callback=lambda: self.actions.building.build(
                int(dpg.get_value(self.build_count)), dpg.get_value(self.build_generator).strip()))
            dpg.add_button(label="Cancel", callback=lambda: self.actions.building.cancel())
            dpg.add_button(label="Clear", callback=lambda: self.actions.building.clear_portraits())
        self._task_view("Build")
        with dpg.texture_registry():
            self._texture_parent = dpg.last_container()
        self._textures: dict[str, int] = {}

    def video_sources(self) -> int:
        """How many frames the Build panel asks to choose from a video."""
        return int(dpg.get_value(self.video_sources_field))

    def video_refine(self) -> tuple[RefineConfig, float]:
        """The refinement of a build from a video: the Refine panel's weights and the Build
        panel's minutes (the iteration count is a first guess the time budget replaces)."""
        return self._refine_config(VIDEO_REFINE_FIRST_GUESS), float(dpg.get_value(self.video_minutes))

    def show_panel(self, name: str) -> None:
        dpg.set_value(self.tab_bar, self.tabs[name])

    def set_portraits(self, portraits: list[Portrait]) -> None:
        """Rows of (thumbnail, name, status, up/down/remove) for the queued portraits."""
        dpg.delete_item(self.portrait_box, children_only=True)
        live = {p.key for p in portraits}
        for key in [k for k in self._textures if k not in live]:
            dpg.delete_item(self._textures.pop(key))
        b = self.actions.building
        for i, p in enumerate(portraits):
            if p.key not in self._textures:
                h, w = p.preview.shape[:2]
                self._textures[p.key] = dpg.add_static_texture(w, h, p.preview.ravel().tolist(), parent=self._texture_parent)
            with dpg.group(horizontal=True, parent=self.portrait_box):
                dpg.add_image(self._textures[p.key], width=64, height=64)
                with dpg.group():
                    dpg.add_text(p.status, color=(160, 230, 160) if p.ok else (255, 120, 120), wrap=300)
                    with dpg.group(horizontal=True):
                        dpg.add_button(label="up", callback=lambda s, a, u: b.move_portrait(u, -1), user_data=i)
                        dpg.add_button(label="down", callback=lambda s, a, u: b.move_portrait(u, 1), user_data=i)
                        dpg.add_button(label="remove", callback=lambda s, a, u: b.remove_portrait(u), user_data=i)

    def refine_after_build(self) -> RefineConfig | None:
        """The refinement the Build panel asks for once a build is done (the Refine panel's
        weights, the Build panel's iterations), None when it asks for none."""
        if not dpg.get_value(self.refine_after):
            return None
        return self._refine_config(dpg.get_value(self.refine_after_iters))

    def _refine_panel(self) -> None:
        self.refine_data = dpg.add_combo([k.value for k in FrameKind], width=260, label="data",
                                         default_value=FrameKind.STORED.value,
                                         callback=lambda s, a: self._show_refine_path(FrameKind(a)))
        with dpg.group(horizontal=True, show=False) as self.refine_path_row:
            self.refine_path = dpg.add_input_text(width=260)
            dpg.add_button(label="Browse...", callback=lambda: self._show(
                "refine_video" if self._frame_choice().kind is FrameKind.VIDEO else "refine_folder"))
        self.refine_iters = dpg.add_input_int(label="iterations", default_value=10000, min_value=10, max_value=100000,
                                              min_clamped=True, step=1000, width=160)
        with dpg.collapsing_header(label="Loss weights and anti-spike thresholds"):
            self.refine_dssim = dpg.add_input_float(label="D-SSIM weight", default_value=0.2, width=120, step=0)
            self.refine_fields = {}
            spike = AntiSpikeConfig()
            for name, weight, threshold in (("anisotropy", spike.weight_anisotropy, spike.max_anisotropy),
                                            ("size", spike.weight_size, spike.max_size),
                                            ("offset", spike.weight_offset, spike.max_offset)):
                with dpg.group(horizontal=True):
                    w = dpg.add_input_float(label=f"{name} weight", default_value=weight, width=90, step=0)
                    t = dpg.add_input_float(label="threshold", default_value=threshold, width=90, step=0)
                self.refine_fields[name] = (w, t)
            self.refine_regularize = dpg.add_checkbox(label="anti-spike regularization", default_value=True)
        with dpg.group(horizontal=True):
            self.refine_start = dpg.add_button(label="Start", callback=lambda: self.actions.refining.start(
                self._frame_choice(), self._refine_config(dpg.get_value(self.refine_iters))))
            self.refine_pause_button = dpg.add_button(label="Pause", callback=lambda: self.actions.refining.pause())
            dpg.add_button(label="Stop", callback=lambda: self.actions.refining.stop())
        self._task_view("Refine")
        self.refine_series: dict[str, int] = {}
        with dpg.plot(label="losses", height=150, width=-1):
            dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast, horizontal=True)
            x = dpg.add_plot_axis(dpg.mvXAxis, label="iteration")
            with dpg.plot_axis(dpg.mvYAxis, label="loss") as y:
                for term in ("total", "l1", "dssim", "anisotropy", "size", "offset"):
                    self.refine_series[term] = dpg.add_line_series([], [], label=term, parent=y)
            self.refine_axes = [(x, y)]
        with dpg.plot(label="held-out PSNR in the head mask and spikes", height=130, width=-1):
            dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast, horizontal=True)
            x = dpg.add_plot_axis(dpg.mvXAxis, label="iteration")
            with dpg.plot_axis(dpg.mvYAxis, label="PSNR dB / spikes %") as y:
                self.refine_series["psnr_mask"] = dpg.add_line_series([], [], label="PSNR in mask", parent=y)
                self.refine_series["spikes"] = dpg.add_line_series([], [], label="over threshold %", parent=y)
            self.refine_axes.append((x, y))
            self.refine_psnr_axis = y
        self.refine_hist: dict[str, int] = {}
        self.refine_threshold: dict[str, int] = {}
        with dpg.group(horizontal=True):
            for name in ("anisotropy", "size", "offset"):
                with dpg.plot(label=name, height=120, width=170, no_menus=True):
                    x = dpg.add_plot_axis(dpg.mvXAxis)
                    with dpg.plot_axis(dpg.mvYAxis) as y:
                        self.refine_hist[name] = dpg.add_bar_series([], [], parent=y)
                        # A vertical line at the threshold: what lies right of it is a spike.
                        self.refine_threshold[name] = dpg.add_inf_line_series([], parent=y)
                    self.refine_axes.append((x, y))

    def _show_refine_path(self, kind: FrameKind) -> None:
        dpg.configure_item(self.refine_path_row, show=kind is not FrameKind.STORED)
        dpg.configure_item(self.refine_path, hint=REFINE_PATH_HINTS[kind])

    def show_frame_choice(self, choice: FrameChoice) -> None:
        """The Refine panel's frames set to choice (a refinement the app started by itself)."""
        dpg.set_value(self.refine_data, choice.kind.value)
        dpg.set_value(self.refine_path, choice.path)
        self._show_refine_path(choice.kind)

    def _frame_choice(self) -> FrameChoice:
        return FrameChoice(FrameKind(dpg.get_value(self.refine_data)), dpg.get_value(self.refine_path))

    def _refine_config(self, iterations: int) -> RefineConfig:
        """The Refine panel's loss weights and thresholds for a run of `iterations`: no
        checkpoints (the result is the shown avatar), a few reports per run for the plots.
        held_out is left to the refining controller, which knows the frame count."""
        g = dpg.get_value
        (wa, ta), (ws, ts), (wo, to) = (self.refine_fields[n] for n in ("anisotropy", "size", "offset"))
        spike = AntiSpikeConfig(max_anisotropy=g(ta), max_size=g(ts), max_offset=g(to),
                                weight_anisotropy=g(wa), weight_size=g(ws), weight_offset=g(wo))
        return RefineConfig(iterations=iterations, lambda_dssim=g(self.refine_dssim), antispike=spike,
                            regularize=g(self.refine_regularize), checkpoint_every=0,
                            report_every=max(1, min(10, iterations // 5)), backend="auto")

    def set_refine_paused(self, paused: bool) -> None:
        if paused != self._paused_shown:
            self._paused_shown = paused
            dpg.configure_item(self.refine_pause_button, label="Resume" if paused else "Pause")

    def set_refine_plots(self, history: list) -> None:
        """Every Report of the run so far (a new one just arrived): curves and the newest histograms."""
        report = history[-1]
        its = [float(r.iteration) for r in history]
        psnr_plot: list[float] = []  # the values of the held-out PSNR plot
        for term, series in self.refine_series.items():
            if term == "psnr_mask":
                pts = [(float(r.iteration), r.psnr_mask) for r in history if r.psnr_mask is not None]
                dpg.set_value(series, [[p[0] for p in pts], [p[1] for p in pts]])
                psnr_plot += [p[1] for p in pts]
            elif term == "spikes":
                spikes = [100.0 * r.spike_fraction for r in history]
                dpg.set_value(series, [its, spikes])
                psnr_plot += spikes
            else:
                dpg.set_value(series, [its, [r.losses.get(term, 0.0) for r in history]])
        for name, series in self.refine_hist.items():
            st = report.stats[name]
            edges = st.hist_edges
            dpg.set_value(series, [[0.5 * (a + b) for a, b in zip(edges[:-1], edges[1:])], [float(c) for c in st.hist_counts]])
            dpg.configure_item(series, weight=(edges[1] - edges[0]) if len(edges) > 1 else 1.0)
            dpg.set_value(self.refine_threshold[name], [[st.threshold]])
        for x, y in self.refine_axes:
            dpg.fit_axis_data(x)
            if y != self.refine_psnr_axis:
                dpg.fit_axis_data(y)
        # Fitted exactly, a steady PSNR and 0% of spikes lay on the plot's top and bottom edges,
        # where their lines did not show: a margin around them.
        if psnr_plot:
            lo, hi = min(psnr_plot), max(psnr_plot)
            pad = max(0.08 * (hi - lo), 0.5)
            dpg.set_axis_limits(self.refine_psnr_axis, lo - pad, hi + pad)

    # ------------------------------------------------------------------ updates from the app
    def show_task(self, panel: str, state: TaskState) -> None:
        view = self.task_views[panel]
        dpg.set_value(view.bar, state.fraction)
        dpg.set_value(view.text, state.text)

    def set_values(self, expr: np.ndarray, pose: np.ndarray, translation: np.ndarray) -> None:
        """Put the sliders at these values (after reset, or while another source drives)."""
        for i, item in enumerate(self.expr_sliders):
            if item:
                dpg.set_value(item, float(expr[i]))
        for idx, item in self.pose_sliders.items():
            dpg.set_value(item, float(pose[idx]))
        for k, item in enumerate(self.trans_sliders):
            dpg.set_value(item, float(translation[k]))

    def set_info(self, text: str) -> None:
        dpg.set_value(self.info_text, text)

    def set_recent(self, files: list[str]) -> None:
        dpg.configure_item(self.recent_list, items=files)

    def set_motion(self, text: str, fraction: float, playing: bool) -> None:
        dpg.set_value(self.motion_text, text)
        if not dpg.is_item_active(self.timeline):
            dpg.set_value(self.timeline, fraction)
        dpg.configure_item(self.play_button, label="Pause" if playing else "Play")

    def set_record(self, recording: bool, frames: int) -> None:
        dpg.configure_item(self.record_button, label="Stop recording" if recording else "Record")
        dpg.set_value(self.record_text, f"recording: {frames} frames" if recording else "")

    def set_spikes(self, text: str) -> None:
        dpg.set_value(self.spike_text, text)

    def update_log(self, log) -> None:
        if log.version == self._log_version:
            return
        self._log_version = log.version
        dpg.delete_item(self.log_box, children_only=True)
        for entry in log.entries()[-200:]:
            dpg.add_text(entry.line(), parent=self.log_box, color=LEVEL_COLOURS.get(entry.level, (200, 200, 200)))
        dpg.set_y_scroll(self.log_box, -1.0)

    # ------------------------------------------------------------------ frames and windows
    def render_frame(self) -> bool:
        """Draw one console frame; False once the user closed the console window."""
        if not dpg.is_dearpygui_running():
            return False
        self._gl.make_current()
        dpg.render_dearpygui_frame()
        return True

    def screenshot(self, path: str | Path) -> None:
        dpg.output_frame_buffer(file=str(path))

    def geometry(self) -> tuple[list[int], list[int]]:
        return list(dpg.get_viewport_pos()), [dpg.get_viewport_width(), dpg.get_viewport_height()]

    def close(self) -> None:
        dpg.destroy_context()
