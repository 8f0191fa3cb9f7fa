"""Measure the tracker's expression gains on renders of the default avatar (open head).

Renders the default avatar at rest and with each expression component (and the jaw) at a few
levels, with the gl renderer in the tracking camera (512x512, REAL_FOV_Y_DEG, the head about
0.4 m away, as a webcam sees a face), runs MediaPipe on each render, compares the landmark motion
it sees with the head model's own, and prints each component's (gain, max_drive) as the Python literal for
savatar.core.drive.calibration.OPEN_HEAD_RESPONSE (measure_response says how). Then it measures,
per expression component up to that max_drive, the landmark motion MediaPipe sees against the
head model's own and writes it as savatar/assets/open_head_seen.npz (measure_seen_offset: the
basis the retargeting fit reads expressions in), with where MediaPipe places the rest face's
landmarks in depth, read from renders of the head turned (measure_seen_rest). Last, it measures
how open the eyes read along the lid drive (measure_lid_curve) and prints OPEN_HEAD_LIDS, and the
head turn the fit reads when only the avatar's eyes turn (measure_gaze) and prints
OPEN_HEAD_GAZE, and how far the brows are worth driving together, lowered and raised
(measure_brow_limits), and prints OPEN_HEAD_BROW_LIMITS. Deterministic up to MediaPipe's floats
on this CPU.

    .venv/bin/python scripts/calibrate_tracking.py [--show DIR] [--only response|seen|lids|gaze|brows]
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
    parser.add_argument("--only", choices=("response", "seen", "lids", "gaze", "brows"),
                        help="measure only the response table (printed), the seen basis (written), the lid curve, "
                             "the gaze's head turn or the brows' limits (printed)")
    args = parser.parse_args()

    from PIL import Image

    from savatar.core.drive.calibration import (OPEN_HEAD_REST, OPEN_HEAD_RESPONSE, SEEN_ASSET, ExpressionCalibration,
                                                brow_height, measure_brow_limits, measure_gaze, measure_lid_curve,
                                                measure_response, measure_seen_offset, symmetric)
    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.drive.tracking import (TRACKING_VIEWMAT, FaceFitter, LandmarkModel, intrinsics_for,
                                             mediapipe_indices, project_tracking)
    from savatar.core.build.default_avatar import default_avatar
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
    lmodel = LandmarkModel(rig.data, avatar.shape.numpy(), avatar.static_offset.numpy())

    def model(expr: np.ndarray, jaw: float) -> np.ndarray:
        x = lmodel.evaluate(np.eye(3), trans.astype(np.float64), np.array([jaw, 0.0, 0.0]), np.zeros(2), expr)
        return project_tracking(x, K)[:, :2]

    with FaceLandmarker(static_images=True) as landmarker:
        def render(expr: np.ndarray, jaw: float):
            pose = np.zeros(15, np.float32)
            pose[6] = jaw
            world = rig.world(expr.astype(np.float32), pose, trans)
            image = to_uint8(splat.render(world, camera, (1.0, 1.0, 1.0)).rgb)
            if args.show is not None:
                args.show.mkdir(parents=True, exist_ok=True)
                label = names[int(np.argmax(expr))] if expr.any() else "jaw"
                Image.fromarray(image).save(args.show / f"{label}_{max(expr.max(), jaw):.2f}.png")
            pts = landmarker(image)
            return None if pts is None else pts[:, :2]

        table = OPEN_HEAD_RESPONSE
        if args.only in (None, "response"):
            table = symmetric(measure_response(render, model, names))
            print("OPEN_HEAD_RESPONSE: dict[str, tuple[float, float]] = ", end="")
            pprint.pprint(table, sort_dicts=False, width=110)
        if args.only in (None, "seen"):
            rest = lmodel.evaluate(np.eye(3), trans.astype(np.float64), np.zeros(3), np.zeros(2), np.zeros(len(names)))
            depth = project_tracking(rest, K)[:, 2]
            cal = ExpressionCalibration.from_table(names, table)
            offset, jaw = measure_seen_offset(render, model, names, depth, K, cal.max_drive, cal.max_jaw)
            rest_offset = seen_rest_offset(rig, lmodel, splat, camera, landmarker, trans, K)
            out = Path(__file__).resolve().parents[1] / "savatar" / "assets" / SEEN_ASSET
            np.savez_compressed(out, names=np.array(names), offset=offset.astype(np.float32), jaw=jaw.astype(np.float32),
                                rest=rest_offset.astype(np.float32))
            print(f"wrote {out}")
        if args.only in (None, "lids"):
            def eyes(blink: float, wide: float):
                e = np.zeros(len(names))
                for side in ("L", "R"):
                    e[names.index(f"eyeBlink_{side}")] = blink
                    e[names.index(f"eyeWide_{side}")] = wide
                return render(e, 0.0)
            curve = measure_lid_curve(eyes, OPEN_HEAD_REST.get("eyeWide_L", 0.0))
            print("OPEN_HEAD_LIDS: tuple[tuple[float, ...], tuple[float, ...]] = (")
            print(f"    {tuple(round(float(x), 2) for x in curve.levels)},")
            print(f"    {tuple(round(float(x), 3) for x in curve.ratio)})")
        if args.only in (None, "brows"):
            from savatar.core.drive.retarget import BROWS_DOWN, BROWS_UP

            def brows(level: float):
                e = np.array([OPEN_HEAD_REST.get(n, 0.0) for n in names])
                for n in (BROWS_UP if level > 0 else BROWS_DOWN):
                    e[names.index(n)] = abs(level)
                pts = render(e, 0.0)
                return None if pts is None else brow_height(pts)

            print(f"OPEN_HEAD_BROW_LIMITS: tuple[float, float] = {measure_brow_limits(brows)}")
        if args.only in (None, "gaze"):
            rest_drive = np.array([OPEN_HEAD_REST.get(n, 0.0) for n in names], np.float32)
            fitter = FaceFitter(rig.data, K, avatar.shape.numpy(), None, avatar.static_offset.numpy())
            index = mediapipe_indices(rig.data)

            def looking(yaw: float):
                pose = np.zeros(15, np.float32)
                pose[10] = pose[13] = yaw
                image = to_uint8(splat.render(rig.world(rest_drive, pose, trans), camera, (1.0, 1.0, 1.0)).rgb)
                pts = landmarker(image)
                return None if pts is None else pts[index]

            def read(pts: np.ndarray) -> float:
                fitter.reset()
                return float(fitter.fit(pts, 30).pose[1])

            gaze = measure_gaze(looking, read)
            print("OPEN_HEAD_GAZE: tuple[tuple[float, ...], tuple[float, ...]] = (")
            print(f"    {tuple(round(float(x), 2) for x in gaze.levels)},")
            print(f"    {tuple(round(float(x), 4) for x in gaze.head)})")


def seen_rest_offset(rig, lmodel, splat, camera, landmarker, trans: np.ndarray, K: np.ndarray) -> np.ndarray:
    """measure_seen_rest on renders of the avatar at rest turned by each of SEEN_REST_YAWS."""
    from savatar.core.drive.calibration import SEEN_REST_YAWS, measure_seen_rest
    from savatar.core.drive.tracking import FACE_OVAL, mediapipe_indices, project_tracking, rodrigues
    from savatar.core.io.pixels import to_uint8

    index = mediapipe_indices(rig.data)
    rest = np.zeros(len(rig.data.expr_names))
    seen, model, jacobian = [], [], []
    for deg in SEEN_REST_YAWS:
        root = np.array([0.0, np.radians(deg), 0.0])
        pose = np.zeros(15, np.float32)
        pose[0:3] = root
        image = to_uint8(splat.render(rig.world(rest.astype(np.float32), pose, trans), camera, (1.0, 1.0, 1.0)).rgb)
        pts = landmarker(image)
        if pts is None:
            continue
        r = rodrigues(root)
        x = lmodel.evaluate(r, trans.astype(np.float64), np.zeros(3), np.zeros(2), rest)
        at = project_tracking(x, K)[:, :2]
        step = 1e-4  # metres: the projection is smooth at this scale
        jac = np.stack([(project_tracking(x + step * r[:, k], K)[:, :2] - at) / step for k in range(3)], -1)
        seen.append(pts[index, :2])
        model.append(at)
        jacobian.append(jac)
    if len(seen) < 3:
        raise SystemExit("calibrate_tracking: MediaPipe found too few of the turned renders to place the landmarks")
    return measure_seen_rest(np.stack(seen), np.stack(model), np.stack(jacobian), np.isin(index, FACE_OVAL))


if __name__ == "__main__":
    main()
