"""`savatar render` (Gaussian avatar to an image or video) and `savatar render-mesh`."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from savatar.cli_args import UserError, add_expr_pose_args, parse_expr, parse_pose
from savatar.commands.common import frame_renderer, load_avatar_arg, make_rig, parse_color
from savatar.commands.progress import progress_bar
from savatar.core.io.pixels import to_uint8
from savatar.core.render.camera import orbit_camera

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi")


def add_view_args(p: argparse.ArgumentParser) -> None:
    """Head parameters and camera, shared by render and render-mesh."""
    add_expr_pose_args(p)
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in degrees (positive: from the head's left)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees")
    p.add_argument("--distance", type=float, default=0.75, help="camera distance in metres")
    p.add_argument("--fov", type=float, default=30.0, help="vertical field of view in degrees")
    p.add_argument("-W", "--width", type=int, default=512)
    p.add_argument("-H", "--height", type=int, default=512)
    p.add_argument("--flame", metavar="DIR", help="folder with your FLAME files (or set SAVATAR_FLAME_DIR)")


def check_size(args: argparse.Namespace) -> None:
    if not (16 <= args.width <= 8192 and 16 <= args.height <= 8192):
        raise UserError("-W and -H must be between 16 and 8192")


def head_centre(verts: np.ndarray) -> np.ndarray:
    """Point to aim the camera at: the middle of the head's bounding box, a little high."""
    lo, hi = verts.min(0), verts.max(0)
    return np.array([0.5 * (lo[0] + hi[0]), lo[1] + 0.6 * (hi[1] - lo[1]), 0.5 * (lo[2] + hi[2])])


def cmd_render(args: argparse.Namespace) -> int:
    """Render an avatar (default: the bundled one) to a .png, or a motion/orbit to a video."""
    check_size(args)
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise UserError(f"{out}: the output must be one of {', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)}")
    video = suffix in VIDEO_SUFFIXES
    if not video and (args.orbit or args.motion or args.audio):
        raise UserError("--orbit, --motion and --audio make a video: give an .mp4 output")
    rig = make_rig(load_avatar_arg(args.avatar), args.flame)
    names = rig.data.expr_names
    base_expr = parse_expr(args.expr, names) + rig.avatar.default_expr.numpy()
    base_pose = parse_pose(args.pose)
    motion = None
    if args.motion:
        from savatar.core.drive.motion import MotionFormatError, load_motion
        try:
            motion = load_motion(args.motion).remap(names)
        except MotionFormatError as exc:
            raise UserError(str(exc)) from None
    fps = motion.fps if motion else args.fps
    count = len(motion) if motion else (args.frames if video else 1)
    drawer = frame_renderer(args.backend, parse_color(args.background))
    with torch.no_grad():
        target = head_centre(rig.vertices(base_expr, base_pose).numpy())

    def frame(i: int) -> np.ndarray:
        expr, pose, trans = base_expr, base_pose, np.zeros(3, np.float32)
        if motion is not None:
            expr, pose, trans = motion.expr[i] + base_expr, motion.pose[i] + base_pose, motion.translation[i]
        yaw = args.yaw + (360.0 * i / count if args.orbit else 0.0)
        cam = orbit_camera(yaw, args.pitch, args.distance, target, args.width, args.height, args.fov)
        return to_uint8(drawer.draw(rig.world(expr, pose, trans), cam))

    out.parent.mkdir(parents=True, exist_ok=True)
    if not video:
        from PIL import Image
        Image.fromarray(frame(0)).save(out)
        print(f"wrote {out} ({drawer.backend})")
        return 0
    write_video(out, (frame(i) for i in range(count)), count, fps, args.width, args.height, drawer.backend)
    if args.audio:
        attach_audio(out, Path(args.audio))
    return 0


def mux_audio(video: Path, source: Path) -> str | None:
    """Replace video by itself with the audio of source (an audio file, or a video whose sound
    it carries), through ffmpeg. None when done, else why not (no ffmpeg, or ffmpeg's error)."""
    import shutil
    import subprocess

    if not shutil.which("ffmpeg"):
        return "no ffmpeg on PATH"
    muxed = video.with_name(f".{video.stem}.mux{video.suffix}")
    # Explicit maps: the picture of the first input, the sound (if any) of the second.
    proc = subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(video), "-i", str(source), "-map", "0:v:0",
                           "-map", "1:a:0?", "-c:v", "copy", "-c:a", "aac", "-shortest", str(muxed)],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        muxed.replace(video)
        return None
    muxed.unlink(missing_ok=True)
    return f"ffmpeg could not mux the audio ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"


def attach_audio(video: Path, audio: Path) -> None:
    """Mux the audio into the video with ffmpeg when it is on PATH, else copy it beside."""
    import shutil

    if not audio.is_file():
        raise UserError(f"{audio}: no such file")
    problem = mux_audio(video, audio)
    if problem is None:
        print(f"muxed {audio.name} into {video}")
        return
    if problem != "no ffmpeg on PATH":
        print(f"{problem}; copying it beside")
    beside = video.with_suffix(audio.suffix)
    shutil.copyfile(audio, beside)
    print(f"no ffmpeg on PATH: wrote the audio beside the video as {beside}")


def write_video(out: Path, frames, count: int, fps: float, width: int, height: int, label: str) -> None:
    """Encode RGB uint8 frames with a progress bar; the file appears only once complete."""
    from savatar.core.io.video_file import VideoFileError, VideoWriter

    try:
        writer = VideoWriter(out, fps, width, height)
    except VideoFileError as exc:
        raise UserError(str(exc)) from None
    try:
        for img in progress_bar(frames, total=count, desc=f"render ({label})", unit="frame"):
            writer.write(img)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    print(f"wrote {out}: {count} frames at {fps:g} fps")


def cmd_render_mesh(args: argparse.Namespace) -> int:
    """Shaded render of the head model at an expression and pose."""
    from PIL import Image

    from savatar.commands.head import head_data_arg
    from savatar.core.head.head_model import HeadModel
    from savatar.gl.mesh_renderer import MeshRenderer

    check_size(args)
    data = head_data_arg(args.flame)
    expr = parse_expr(args.expr, data.expr_names)
    pose = parse_pose(args.pose)
    out = Path(args.output)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{out}: the output must be a .png or .jpg file")
    with torch.no_grad():
        verts = HeadModel(data)(expr=torch.from_numpy(expr)[None], pose=torch.from_numpy(pose)[None]).vertices[0].numpy()
    cam = orbit_camera(args.yaw, args.pitch, args.distance, 0.5 * (verts.min(0) + verts.max(0)),
                       args.width, args.height, args.fov)
    colors = data.vertex_colors if data.vertex_colors is not None else np.full((len(verts), 3), 0.8, np.float32)
    img = MeshRenderer(data.faces, colors).render(verts, cam)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(out)
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("render", help="render an avatar to .png, or a motion / orbit to .mp4")
    p.add_argument("avatar", nargs="?", help="avatar .h5 (default: the bundled avatar)")
    add_view_args(p)
    p.add_argument("--motion", metavar="M.npz", help="motion file to play (video output)")
    p.add_argument("--orbit", action="store_true", help="turn the camera once around the head (video output)")
    p.add_argument("--audio", metavar="FILE", help="sound for the video: muxed with ffmpeg if present, else copied beside")
    p.add_argument("--frames", type=int, default=90, help="frames of an --orbit video without --motion")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of an --orbit video without --motion")
    p.add_argument("--backend", default="gl", choices=["auto", "gl", "cpu", "gsplat"],
                   help="gl: OpenGL splatting (default, fast); cpu: PyTorch rasterizer; gsplat: CUDA; auto: gsplat or cpu")
    p.add_argument("--background", default="1,1,1", metavar="R,G,B", help="background colour (default white)")
    p.add_argument("-o", "--output", required=True, help="output .png/.jpg, or .mp4/.avi for videos")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("render-mesh", help="shaded render of the head model at an expression and pose")
    add_view_args(p)
    p.add_argument("-o", "--output", required=True, help="output .png")
    p.set_defaults(func=cmd_render_mesh)
