"""Measure the tracker's expression gains on renders of the default avatar (open head).

Renders the default avatar at rest and with each expression component (and the jaw) at a few
levels, with the gl renderer in the tracking camera (512x512, REAL_FOV_Y_DEG, the head about
0.4 m away, as a webcam sees a face), tracks each render with the rest render as the driver's
neutral, and prints the gains as the Python literal for
savatar.core.drive.calibration.OPEN_HEAD_GAINS. Deterministic up to MediaPipe's floats on this CPU.

    .venv/bin/python scripts/calibrate_tracking.py [--show DIR]
"""
from __future__ import annotations

import argparse
import pprint
from pathlib import Path

import numpy as np

SIZE = 512
DISTANCE = 0.42


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=Path, help="also save each render here as PNG, to look at")
    args = parser.parse_args()

    from PIL import Image

    from savatar.core.drive.calibration import ExpressionCalibration, measure_gains
    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.drive.retarget import Retargeter
    from savatar.core.drive.tracking import TRACKING_VIEWMAT, intrinsics_for
    from savatar.core.gaussians.binding import default_avatar
    from savatar.core.gaussians.rig import Rig
    from savatar.core.io.pixels import to_uint8
    from savatar.core.render.camera import Camera
    from savatar.gl.splat_renderer import SplatRenderer

    avatar = default_avatar()
    rig = Rig.of(avatar)
    names = list(rig.data.expr_names)
    K = intrinsics_for(SIZE, SIZE)
    camera = Camera(TRACKING_VIEWMAT, K, SIZE, SIZE)
    splat = SplatRenderer()
    trans = np.array([0.0, 0.0, -DISTANCE], np.float32)

    def render(expr: np.ndarray, jaw: float) -> np.ndarray:
        pose = np.zeros(15, np.float32)
        pose[6] = jaw
        return to_uint8(splat.render(rig.world(expr.astype(np.float32), pose, trans), camera, (1.0, 1.0, 1.0)).rgb)

    with FaceLandmarker(static_images=True) as landmarker:
        rest = landmarker(render(np.zeros(len(names)), 0.0))
        rt = Retargeter(rig.data, K, avatar.shape.numpy(), avatar.static_offset.numpy(),
                        calibration=ExpressionCalibration.identity(len(names)))
        rt.set_neutral([rest])

        def read(expr: np.ndarray, jaw: float):
            image = render(expr, jaw)
            if args.show is not None:
                args.show.mkdir(parents=True, exist_ok=True)
                k = int(np.argmax(expr)) if expr.any() else -1
                label = names[k] if k >= 0 else "jaw"
                Image.fromarray(image).save(args.show / f"{label}_{max(expr.max(), jaw):.2f}.png")
            pts = landmarker(image)
            if pts is None:
                return None
            rt.reset()
            fit = rt.fitter.fit(pts, iterations=30)
            return fit.expr, float(fit.pose[6])

        gains = measure_gains(read, names)
    print("OPEN_HEAD_GAINS: dict[str, float] = ", end="")
    pprint.pprint(gains, sort_dicts=False, width=110)


if __name__ == "__main__":
    main()
