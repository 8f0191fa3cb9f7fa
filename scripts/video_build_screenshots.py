"""The viewer's build from a selfie video, run for real and pictured (docs/video_build.png).

The viewer opens (on a virtual screen under xvfb-run), the clip is dropped on the stage as a
user's drop would be, and once its frames are chosen the Build panel is photographed; Build is
pressed, the stage photographed when the built avatar shows, and again (with the Refine panel)
after SECONDS of the refinement against the clip that starts by itself. The picture: Build panel
| Refine panel | stage just built over stage after refining. The individual screenshots stay in
--keep DIR when given.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/video_build_screenshots.py CLIP \
        [-o docs/video_build.png] [--seconds 90] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = 480


def pump(app, until, timeout: float) -> bool:
    """Run the main loop until until() or timeout seconds; whether until() came true."""
    t0 = time.monotonic()
    while not until():
        if time.monotonic() - t0 > timeout:
            return False
        app.stage.dispatch_events()
        app.step(1 / 30)
    app.step(1 / 30)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", help="a selfie video (e.g. frown_turn.mp4 of the development clips)")
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "video_build.png"))
    p.add_argument("--seconds", type=float, default=90.0, help="refinement time before the last screenshots")
    p.add_argument("--keep", metavar="DIR", help="keep the individual screenshots here")
    args = p.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        print("video_build_screenshots: needs a display (run it under xvfb-run -a)", file=sys.stderr)
        return 2
    shots = Path(args.keep or tempfile.mkdtemp(prefix="video_build_"))
    shots.mkdir(parents=True, exist_ok=True)
    os.environ["SAVATAR_CONFIG_DIR"] = str(shots / "config")  # not the user's settings

    import torch
    from PIL import Image

    from savatar.core.build.default_avatar import default_avatar
    from savatar.viewer.app import App

    torch.set_num_threads(1)  # as savatar-viewer runs
    # A copy beside the screenshots: the Refine panel shows the clip's path, which says nothing of this machine then.
    clip = shots / Path(args.clip).name
    if not clip.exists():
        shutil.copyfile(args.clip, clip)
    app = App(default_avatar(), None, (STAGE, STAGE))
    app.stage.window.dispatch_event("on_file_drop", 10, 10, [str(clip)])
    app.stage.dispatch_events()
    if not pump(app, lambda: not app.building.scanning and not app.jobs.busy, 300) or not app.building.portraits:
        print("video_build_screenshots: no frames were chosen (see the log above)", file=sys.stderr)
        return 1
    app.frame_face()
    app.screenshots(str(shots / "chosen_"))

    import dearpygui.dearpygui as dpg
    dpg.get_item_callback(app.console.build_button)()
    if not pump(app, lambda: not app.building.busy, 600):
        return 1
    app.frame_face()
    app.stage.orbit.zoom(-2)  # the hair too, not only the face
    app.stage.orbit.yaw = 15.0  # a little from the side: it is 3D
    app.screenshots(str(shots / "built_"))
    refining = app.refining
    pump(app, lambda: refining.refiner is not None or not refining.busy, 600)
    started = time.monotonic()
    pump(app, lambda: time.monotonic() - started > args.seconds or not refining.busy, args.seconds + 60)
    app.screenshots(str(shots / "refining_"))
    scored = [r for r in refining.history if r.psnr_mask is not None]
    if scored:
        first, last = scored[0], scored[-1]
        print(f"after {time.monotonic() - started:.0f} s: iteration {last.iteration} ({last.it_per_s:.2f} it/s); "
              f"held-out PSNR in mask {first.psnr_mask:.2f} dB at iteration {first.iteration}, "
              f"{last.psnr_mask:.2f} dB at {last.iteration}")
    if args.keep:  # the refined avatar, to look at it with other renderers
        from savatar.core.io.avatar_file import save_avatar
        save_avatar(app.shown.rig.avatar, shots / "refined.h5")
    for entry in app.log.entries():
        print(entry.line())
    app.running = False
    app.shutdown()

    def img(name: str) -> Image.Image:
        return Image.open(shots / name).convert("RGB")

    build_panel, refine_panel = img("chosen_console.png"), img("refining_console.png")
    half = build_panel.height // 2
    built = img("built_stage.png").resize((half, half), Image.LANCZOS)
    refined = img("refining_stage.png").resize((half, half), Image.LANCZOS)
    out = Image.new("RGB", (build_panel.width + refine_panel.width + half, build_panel.height), (30, 30, 30))
    out.paste(build_panel, (0, 0))
    out.paste(refine_panel, (build_panel.width, 0))
    out.paste(built, (build_panel.width + refine_panel.width, 0))
    out.paste(refined, (build_panel.width + refine_panel.width, half))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    out.save(args.output, optimize=True)
    print(f"wrote {args.output} ({out.width}x{out.height}); screenshots in {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
