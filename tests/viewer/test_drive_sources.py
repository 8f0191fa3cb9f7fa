"""Live drive sources on real signals: a video file of a real face, missing devices."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from savatar.core.head.open_head import load_open_head_data
from savatar.drive.sources import AudioFileSource, DriveFrame, DriveSourceError, MicrophoneSource, VideoSource
from savatar.viewer.driving import fit_quality_line


def test_video_source_tracks_a_real_face_and_stops_cleanly(astronaut_video):
    path = astronaut_video
    src = VideoSource(load_open_head_data(), str(path))
    src.start()
    try:
        t0 = time.time()
        frame = None
        while time.time() - t0 < 30:
            frame = src.latest()
            if frame is not None and frame.status == "ok":
                break
            time.sleep(0.05)
        assert frame is not None and frame.status == "ok", src.status()
        assert frame.expr.shape == (len(load_open_head_data().expr_names),) and frame.pose.shape == (15,)
        assert np.isfinite(frame.pose).all()
        for k in ("capture", "landmarks", "fit", "capture_to_params"):
            assert frame.timings[k] >= 0
        # The fit's residual reaches the HUD line (a few pixels on a real face).
        assert 0 < frame.residual_px < 10 and f"fit residual {frame.residual_px:.1f} px" in fit_quality_line(frame)
    finally:
        src.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("drive:") and t.is_alive()]


def test_fit_quality_line_shows_residual_neutral_and_warnings():
    e = np.zeros(3, np.float32)
    frame = DriveFrame(0.0, e, np.zeros(15, np.float32), np.zeros(3, np.float32), 1.0, "ok", residual_px=2.345,
                       warnings=("face too small (40 px between the eyes)", "too dark"), neutral="measuring")
    line = fit_quality_line(frame)
    assert "fit residual 2.3 px" in line and "measuring the neutral face" in line
    assert "face too small (40 px between the eyes); too dark" in line
    # Sources without a fit (microphone, motion files) and no frame yet: nothing.
    assert fit_quality_line(DriveFrame(0.0, e, np.zeros(15, np.float32), np.zeros(3, np.float32))) == ""
    assert fit_quality_line(None) == ""


def test_missing_camera_and_file_are_one_line_errors(tmp_path):
    with pytest.raises(DriveSourceError, match="no webcam at index 7"):
        VideoSource(load_open_head_data(), 7).start()
    with pytest.raises(DriveSourceError, match="cannot open"):
        VideoSource(load_open_head_data(), str(tmp_path / "none.mp4")).start()


def test_microphone_without_device_is_a_clear_error(monkeypatch):
    import savatar.core.drive.lipsync as lipsync

    class FakeSd:
        class PortAudioError(Exception):
            pass

        @staticmethod
        def query_devices(device=None, kind=None):
            raise FakeSd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(lipsync, "import_sounddevice", lambda: FakeSd)
    with pytest.raises(DriveSourceError, match="no audio input device"):
        MicrophoneSource(load_open_head_data()).start()


def test_audio_file_source_plays_by_the_clock_without_an_output_device(tmp_path, monkeypatch):
    import shutil
    import subprocess

    import savatar.core.drive.lipsync as lipsync

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "papa is here"], check=True)

    def no_audio():
        raise lipsync.AudioUnavailableError("audio unavailable: no PortAudio library")

    monkeypatch.setattr(lipsync, "import_sounddevice", no_audio)
    src = AudioFileSource(load_open_head_data(), wav)
    src.start()
    assert "silent" in src.status() and not src.audible
    jaws = [0.0]
    t0 = time.time()
    while max(jaws) <= 0.05 and time.time() - t0 < 30:  # a loaded machine may play late, not never
        jaws.append(src.latest().pose[6])
        time.sleep(0.02)
    assert max(jaws) > 0.05  # the mouth moved while the file "played"
    src.stop()
