"""Settings kept between sessions (window geometry, last camera, recent files) as JSON in the
user's config directory ($XDG_CONFIG_HOME/savatar or ~/.config/savatar; SAVATAR_CONFIG_DIR
overrides). Unreadable settings are ignored, never fatal."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from savatar.core.io.atomic import atomic_path
from savatar.viewer.stage_backends import STAGE_BACKENDS

MAX_RECENT = 10


def config_dir() -> Path:
    if os.environ.get("SAVATAR_CONFIG_DIR"):
        return Path(os.environ["SAVATAR_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "savatar"


@dataclass
class Settings:
    stage_pos: list[int] | None = None
    stage_size: list[int] | None = None
    console_pos: list[int] | None = None
    console_size: list[int] = field(default_factory=lambda: [560, 860])
    camera: dict = field(default_factory=dict)
    recent_files: list[str] = field(default_factory=list)
    stage_backend: str = "auto"  # the last stage backend that drew (savatar.viewer.stage_backends)

    def add_recent(self, path: str | Path) -> None:
        p = str(Path(path).resolve())
        self.recent_files = [p] + [r for r in self.recent_files if r != p][:MAX_RECENT - 1]


def _int_pair(v) -> list[int] | None:
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return v
    return None


def load_settings(path: Path | None = None) -> tuple[Settings, str | None]:
    """(settings, warning or None). A missing file is no warning; a corrupt one is."""
    path = path or config_dir() / "settings.json"
    s = Settings()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return s, None
    except (OSError, ValueError) as exc:
        return s, f"ignoring unreadable settings {path}: {exc}"
    if not isinstance(raw, dict):
        return s, f"ignoring settings {path}: not a JSON object"
    for key in ("stage_pos", "stage_size", "console_pos", "console_size"):
        if _int_pair(raw.get(key)):
            setattr(s, key, raw[key])
    if isinstance(raw.get("camera"), dict):
        s.camera = raw["camera"]
    if raw.get("stage_backend") in STAGE_BACKENDS:
        s.stage_backend = raw["stage_backend"]
    if isinstance(raw.get("recent_files"), list):
        s.recent_files = [str(r) for r in raw["recent_files"] if isinstance(r, str)][:MAX_RECENT]
    return s, None


def save_settings(s: Settings, path: Path | None = None) -> None:
    """Atomic write; errors are the caller's to log."""
    path = path or config_dir() / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(asdict(s), indent=2))
