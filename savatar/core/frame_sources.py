"""Where refinement frames (savatar.core.refine.Frame) come from: a ground-truth rig rendered
along a motion (tests, benches), a folder of images with their head parameters, a video, or the
portraits an avatar was built from."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from savatar.core.refine import Frame
from savatar.core.render import render

if TYPE_CHECKING:
    from savatar.core.build import SourceResult

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def frames_from_motion(rig_gt, expr: np.ndarray, pose: np.ndarray, translation: np.ndarray, cameras: Sequence,
                       backend: str = "cpu", background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> list[Frame]:
    """Render training frames from a ground-truth Rig. expr: (T, E); pose: (T, 15);
    translation: (T, 3); frame t is seen by cameras[t % len(cameras)] (savatar.core.camera.Camera)."""
    bg = torch.tensor(background, dtype=torch.float32)
    frames = []
    for t in range(len(expr)):
        cam = cameras[t % len(cameras)]
        vm = torch.tensor(cam.viewmat, dtype=torch.float32)
        K = torch.tensor(cam.K, dtype=torch.float32)
        with torch.no_grad():
            img = render(rig_gt.world(expr[t], pose[t], translation[t]), vm, K, cam.width, cam.height, bg,
                         backend=backend).rgb.clamp(0, 1)
        frames.append(Frame(img, torch.as_tensor(np.asarray(expr[t], np.float32)),
                            torch.as_tensor(np.asarray(pose[t], np.float32)),
                            torch.as_tensor(np.asarray(translation[t], np.float32)), vm, K))
    return frames


def frames_from_images(directory: str | Path) -> list[Frame]:
    """Frames from a folder: images plus `params.npz` holding
    - `files` (T,) image file names in the folder (default: the sorted .png/.jpg files),
    - `expr` (T, E), `pose` (T, 15), `translation` (T, 3) head parameters,
    - `viewmat` (4, 4) or (T, 4, 4) world-to-camera (OpenCV), `K` (3, 3) or (T, 3, 3) pixels,
    - optional `masks` (T, H, W) in [0, 1].
    Raises ValueError naming what is missing or inconsistent.
    """
    from PIL import Image

    d = Path(directory)
    params = d / "params.npz"
    if not params.is_file():
        raise ValueError(f"{d}: no params.npz (expr, pose, translation, viewmat, K)")
    with np.load(params, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for k in ("expr", "pose", "translation", "viewmat", "K"):
        if k not in data:
            raise ValueError(f"{params}: missing array {k!r}")
    files = [str(x) for x in data["files"]] if "files" in data else sorted(
        p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    t = len(files)
    if t == 0:
        raise ValueError(f"{d}: no images")
    if len(data["expr"]) != t or data["pose"].shape != (t, 15) or data["translation"].shape != (t, 3):
        raise ValueError(f"{params}: expr, pose (T, 15) and translation (T, 3) must have one row per image ({t})")
    per = lambda a, shape: np.broadcast_to(a, (t,) + shape) if a.shape == shape else a  # noqa: E731
    vms, Ks = per(data["viewmat"], (4, 4)), per(data["K"], (3, 3))
    if vms.shape != (t, 4, 4) or Ks.shape != (t, 3, 3):
        raise ValueError(f"{params}: viewmat must be (4, 4) or (T, 4, 4) and K (3, 3) or (T, 3, 3)")
    frames = []
    for i, name in enumerate(files):
        path = d / name
        if not path.is_file():
            raise ValueError(f"{path}: listed in params.npz but missing")
        img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        mask = torch.from_numpy(np.asarray(data["masks"][i], np.float32)) if "masks" in data else None
        f32 = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
        frames.append(Frame(torch.from_numpy(img), f32(data["expr"][i]), f32(data["pose"][i]),
                            f32(data["translation"][i]), f32(vms[i]), f32(Ks[i]), mask))
    return frames


def frames_from_video(path: str | Path, data) -> list[Frame]:
    """Not yet: tracking gives head parameters, but the tracker's camera (intrinsics from a
    fixed field of view, translation relative to the first frame) is not yet tied to a render
    camera, so tracked frames cannot be compared with renders."""
    raise NotImplementedError("refining from a video is not available yet (the tracker's camera is not "
                              "wired to the renderer); use --images with a params.npz")


def frames_from_build(results: Sequence[SourceResult]) -> list[Frame]:
    """The usable sources of a build (savatar.core.build.SourceResult) as frames, seen by the
    cameras the build fitted, with the person mask limiting the loss to the head."""
    from savatar.core.tracking import TRACKING_VIEWMAT

    f32 = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
    return [Frame(f32(r.image), f32(r.expr), f32(r.pose), f32(r.translation), f32(TRACKING_VIEWMAT), f32(r.K),
                  None if r.mask is None else f32(r.mask))
            for r in results if r.ok and r.image is not None]
