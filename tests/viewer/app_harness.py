"""A real viewer App for tests (imported by the tests beside it): made in a private config
folder and shut down afterwards, and the main loop pumped until something happens."""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator


def running_app(config_dir, size: tuple[int, int], **kwargs) -> Iterator:
    """Yield an App showing the default avatar at size, with settings in config_dir; shut it
    down and restore SAVATAR_CONFIG_DIR after. For module fixtures: `yield from running_app(...)`."""
    old_config = os.environ.get("SAVATAR_CONFIG_DIR")
    os.environ["SAVATAR_CONFIG_DIR"] = str(config_dir)
    from savatar.core.build.default_avatar import default_avatar
    from savatar.viewer.app import App

    a = App(default_avatar(), None, size, **kwargs)
    a.log.echo = False
    try:
        yield a
    finally:
        if a.running:
            a.running = False
            a.shutdown()
        if old_config is None:
            os.environ.pop("SAVATAR_CONFIG_DIR", None)
        else:
            os.environ["SAVATAR_CONFIG_DIR"] = old_config


def pump(app, frames: int = 3, until: Callable[[], bool] | None = None, timeout: float = 60.0):
    """Run frames main-loop steps, then more until until() (at most timeout seconds)."""
    t0 = time.time()
    for _ in range(frames):
        app.stage.dispatch_events()
        app.step(1 / 30)
    while until is not None and not until() and time.time() - t0 < timeout:
        app.stage.dispatch_events()
        app.step(1 / 30)
    app.step(1 / 30)  # hands over what the worker finished after the last frame
    return app
