"""A virtual X display for benchmarks that open windows (Xvfb when there is no DISPLAY)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager


@contextmanager
def x_display():
    """Yields the DISPLAY to use; starts and stops an Xvfb server if none is set."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if not shutil.which("Xvfb"):
        raise RuntimeError("no DISPLAY and no Xvfb (Debian package xvfb)")
    for n in range(90, 110):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            break
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1920x1080x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if os.path.exists(f"/tmp/.X11-unix/X{n}"):
                break
            time.sleep(0.1)
        os.environ["DISPLAY"] = f":{n}"
        yield f":{n}"
    finally:
        os.environ.pop("DISPLAY", None)
        proc.terminate()
        proc.wait(5)
