"""Live-driving latency: VideoSource (capture thread + tracking thread) on an MJPG file of
scikit-image's astronaut, as the viewer's Drive panel runs it. Audio analysis per 10 ms hop is in
bench_lipsync."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench import entry


def _write_video(path: Path, frames: int = 60, fps: float = 30.0) -> None:
    import cv2
    from skimage.data import astronaut

    src = astronaut()[..., ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    try:
        for i in range(frames):
            # The face drifts a few pixels per frame so consecutive frames differ, as from a camera.
            dx = 4.0 * np.sin(2 * np.pi * i / frames)
            m = np.float32([[1, 0, 320 - 210 + dx], [0, 1, 240 - 150]])
            writer.write(cv2.warpAffine(src, m, (640, 480)))
    finally:
        writer.release()


@entry("drive_latency")
def drive_latency(seconds: float = 3.0) -> dict[str, float]:
    from savatar.core.head.open_head import load_open_head_data
    from savatar.drive.sources import VideoSource

    data = load_open_head_data()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "astronaut.avi"
        _write_video(path)
        source = VideoSource(data, str(path))
        source.start()
        frames = {}
        try:
            # The first tracked frame includes MediaPipe's model load and the solvePnP start.
            deadline = time.perf_counter() + 30.0
            while source.latest() is None and time.perf_counter() < deadline:
                time.sleep(0.005)
            first = source.latest()
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end:
                f = source.latest()
                if f is not None and f is not first:
                    frames[f.time] = f  # keyed by capture time: each tracked frame counted once
                time.sleep(0.002)
        finally:
            source.stop()
    if not frames:
        raise RuntimeError(f"VideoSource produced no frames: {source.status()}")
    got = list(frames.values())

    def median(key: str) -> float:
        return float(np.median([f.timings[key] for f in got]))
    ok = sum(f.status == "ok" for f in got)
    return {"capture_ms": median("capture"), "landmarks_ms": median("landmarks"), "fit_ms": median("fit"),
            "capture_to_params_ms": median("capture_to_params"),
            "capture_to_params_p90_ms": float(np.percentile([f.timings["capture_to_params"] for f in got], 90)),
            "tracked_fps": len(got) / seconds, "face_found_fraction": ok / len(got)}
