"""One DriveSource interface for everything that animates an avatar live.

A source runs its own worker threads (capture, tracking, audio analysis) and keeps only its
newest result (latest(), never a queue: a slow consumer skips stale frames). stop() joins every
thread it started. Failures to start raise DriveSourceError with a one-line message."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from savatar.core.head.head_model import HeadModelData
from savatar.core.render.camera import Camera
from savatar.latest_slot import LatestSlot


class DriveSourceError(RuntimeError):
    """A source could not start: no camera, no audio device, unreadable file."""


@dataclass
class TrackedImage:
    """The video frame a DriveFrame was tracked from, to draw the avatar over: rgb (H, W, 3)
    uint8; camera the tracker's (TRACKING_VIEWMAT, its K for this frame size); translation (3,)
    the fit's, in that camera's world (DriveFrame.translation is relative to the first face)."""

    rgb: np.ndarray
    camera: Camera
    translation: np.ndarray


@dataclass
class DriveFrame:
    """time: seconds on time.perf_counter's clock when the input was captured; expr (E,);
    pose (15,); translation (3,); confidence 0..1; status text; timings in ms per stage;
    image: what it was tracked from (video sources, once a face was seen: before that the fit has
    no place for the head)."""

    time: float
    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    confidence: float = 1.0
    status: str = "ok"
    timings: dict[str, float] = field(default_factory=dict)
    image: TrackedImage | None = None
    residual_px: float = float("nan")  # the face fit's RMS reprojection error (video sources)
    warnings: tuple[str, ...] = ()  # face too small, turned or dark; poor fit
    neutral: str = ""  # the driver's neutral face: "" | "measuring" | "set"


class DriveSource(Protocol):
    name: str

    def start(self) -> None: ...
    def latest(self) -> DriveFrame | None: ...
    def status(self) -> str: ...
    def stop(self) -> None: ...


class VideoSource:
    """Webcam (an integer index) or any video file or stream OpenCV opens, tracked with
    MediaPipe Face Mesh and the face fitter. Capture and tracking run on separate threads, so
    tracking always works on the newest frame and drops the ones it had no time for."""

    def __init__(self, data: HeadModelData, device: int | str = 0, fov_y_deg: float = 50.0, loop_file: bool = True):
        self.data, self.device, self.fov_y_deg, self.loop_file = data, device, fov_y_deg, loop_file
        self.name = f"camera {device}" if isinstance(device, int) else Path(str(device)).name
        self._frame = LatestSlot()
        self._result = LatestSlot()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._origin: np.ndarray | None = None
        self._status = "starting"
        self._cap = None
        self._file_fps = 0.0
        self._neutral_request = threading.Event()

    def start(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            what = f"no webcam at index {self.device}" if isinstance(self.device, int) else f"{self.device}: cannot open the video"
            raise DriveSourceError(what)
        ok, frame = cap.read()
        if not ok:
            cap.release()
            raise DriveSourceError(f"{self.name}: no frames")
        self._cap = cap
        self._file_fps = cap.get(cv2.CAP_PROP_FPS) if not isinstance(self.device, int) else 0.0
        self._frame.put((time.perf_counter(), frame, 0.0))
        for target, name in ((self._capture, "capture"), (self._track, "tracking")):
            t = threading.Thread(target=target, name=f"drive:{name}", daemon=False)
            t.start()
            self._threads.append(t)

    def _capture(self) -> None:
        import cv2

        period = 1.0 / self._file_fps if self._file_fps and self._file_fps > 0 else 0.0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok, frame = self._cap.read()
            if not ok:
                if self.loop_file and not isinstance(self.device, int):
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self._status = "no frames (camera gone?)"
                self._stop.wait(0.2)
                continue
            self._frame.put((t0, frame, (time.perf_counter() - t0) * 1e3))
            if period:  # files play at their own rate, not as fast as they decode
                self._stop.wait(max(0.0, period - (time.perf_counter() - t0)))
        self._cap.release()

    @property
    def fps(self) -> float:
        """The video file's frame rate; 30 for a webcam (it delivers what it can)."""
        return self._file_fps if self._file_fps > 0 else 30.0

    def _track(self) -> None:
        from savatar.core.drive.retarget import Retargeter
        from savatar.core.drive.tracking import TRACKING_VIEWMAT, FaceTracker, TrackerParams, intrinsics_for

        params = TrackerParams(fov_y_deg=self.fov_y_deg)
        # Retargeting: the driver's first second of face (and each "neutral" request) is the
        # avatar's rest face; expressions are calibrated for the head model's renders.
        tracker = FaceTracker(self.data, params, make_fitter=lambda K: Retargeter(self.data, K, params=params))
        try:
            while not self._stop.is_set():
                if self._neutral_request.is_set():
                    self._neutral_request.clear()
                    tracker.request_neutral()
                newest = self._frame.take()
                if newest is None:  # no new frame since the last one tracked
                    self._stop.wait(0.002)
                    continue
                captured, frame, capture_ms = newest
                rgb = np.ascontiguousarray(frame[..., ::-1])
                fit = tracker.process(rgb, captured)
                trans = np.asarray(fit.translation, np.float32)
                if fit.status == "ok" and self._origin is None:
                    self._origin = trans.copy()
                rel = trans - self._origin if self._origin is not None else np.zeros(3, np.float32)
                timings = {"capture": capture_ms, "landmarks": fit.timings.get("landmarks_ms", 0.0),
                           "fit": fit.timings.get("fit_ms", 0.0),
                           "capture_to_params": (time.perf_counter() - captured) * 1e3}
                h, w = rgb.shape[:2]
                self._status = f"{fit.status}, {w}x{h}" + (f", fit {fit.residual_px:.1f} px" if fit.status == "ok" else "") \
                    + (", measuring the neutral face" if fit.neutral == "measuring" else "") \
                    + "".join(f"; {w_}" for w_ in fit.warnings)
                # The tracker, given no K, fits in intrinsics_for(frame size, its fov): this camera.
                # rgb is handed on, not copied: nothing writes to it once it is tracked.
                image = None
                if self._origin is not None:
                    camera = Camera(TRACKING_VIEWMAT, intrinsics_for(w, h, self.fov_y_deg), w, h)
                    image = TrackedImage(rgb, camera, trans)
                self._result.put(DriveFrame(captured, np.asarray(fit.expr, np.float32), np.asarray(fit.pose, np.float32),
                                            rel, fit.confidence, fit.status, timings, image, fit.residual_px,
                                            fit.warnings, fit.neutral))
        finally:
            tracker.close()

    def latest(self) -> DriveFrame | None:
        return self._result.peek()

    def request_neutral(self) -> None:
        """Take the face of the next second as the driver's resting face (any thread)."""
        self._neutral_request.set()

    def status(self) -> str:
        return f"{self.name}: {self._status}"

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=3.0)


class MicrophoneSource:
    """Live speech to mouth: the audio callback only queues samples; a worker analyses them."""

    def __init__(self, data: HeadModelData, sample_rate: int = 16000, device: int | str | None = None):
        import queue

        self.data, self.sample_rate, self.device = data, sample_rate, device
        self.name = "microphone"
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=200)
        self._result = LatestSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = None
        self._status = "starting"

    def start(self) -> None:
        from savatar.core.drive.lipsync import AudioUnavailableError, open_input_stream

        def on_audio(samples: np.ndarray) -> None:
            if not self._queue.full():  # never block PortAudio's thread
                self._queue.put_nowait((time.perf_counter(), samples))

        try:
            self._stream = open_input_stream(on_audio, self.sample_rate, device=self.device)
        except AudioUnavailableError as exc:
            raise DriveSourceError(str(exc)) from None
        self._thread = threading.Thread(target=self._analyse, name="drive:audio", daemon=False)
        self._thread.start()

    def _analyse(self) -> None:
        import queue

        from savatar.core.drive.lipsync import LipSync

        ls = LipSync(self.data.expr_names, self.sample_rate)
        while not self._stop.is_set():
            try:
                captured, samples = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            t0 = time.perf_counter()
            frames = ls.push(samples)
            if frames:
                f = frames[-1]
                pose = np.zeros(15, np.float32)
                pose[6] = f.jaw
                self._status = f"{f.viseme}, {f.loudness:.0f} dB"
                self._result.put(DriveFrame(captured, np.asarray(f.expr, np.float32), pose, np.zeros(3, np.float32),
                                            1.0, "ok", {"audio": (time.perf_counter() - t0) * 1e3}))

    def latest(self) -> DriveFrame | None:
        return self._result.peek()

    def status(self) -> str:
        return f"microphone: {self._status}"

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
        if self._thread is not None:
            self._thread.join(timeout=3.0)


class AudioFileSource:
    """An audio file's mouth motion, played back in sync: through the sound card when there is
    an output device, else clocked by wall time (and the Log says so)."""

    def __init__(self, data: HeadModelData, path: str | Path, fps: float = 60.0):
        self.data, self.path, self.fps = data, Path(path), fps
        self.name = self.path.name
        self._motion = None
        self._t0 = 0.0
        self._status = "starting"
        self.audible = False

    def start(self) -> None:
        from savatar.core.drive.lipsync import import_sounddevice, lipsync_file, read_audio

        try:
            self._motion = lipsync_file(self.path, self.data.expr_names, self.fps)
            samples, sr = read_audio(self.path)
        except (OSError, ValueError) as exc:
            raise DriveSourceError(f"{self.path}: {exc}") from None
        try:
            import_sounddevice().play(samples, sr)
            self.audible = True
            self._status = "playing"
        except Exception as exc:  # no library or no output device: keep time by the clock
            self._status = f"silent (no audio output: {str(exc).splitlines()[0]})"
        self._t0 = time.perf_counter()

    def latest(self) -> DriveFrame | None:
        if self._motion is None:
            return None
        t = time.perf_counter() - self._t0
        expr, pose, trans = self._motion.frame_at(t, loop=False)
        if t > self._motion.duration:
            self._status = "finished"
        return DriveFrame(time.perf_counter(), expr, pose, trans)

    def status(self) -> str:
        return f"{self.name}: {self._status}"

    def stop(self) -> None:
        if self.audible:
            from savatar.core.drive.lipsync import import_sounddevice
            try:
                import_sounddevice().stop()
            except Exception:  # the device may be gone by now; nothing is left to stop
                pass
