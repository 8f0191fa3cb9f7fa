"""Face tracking: MediaPipe landmarks -> head-model parameters, fast enough for a live webcam.

The fit works in a "tracking world": the camera sits at the origin looking along world -z with
world y up (its viewmat is TRACKING_VIEWMAT), so a head facing the camera has root rotation zero,
sits at translation z of about minus its distance, and the subject's left (+x) appears on the
right of an unmirrored image.

Per frame, Levenberg-Marquardt fits head rotation (root), translation, jaw rotation, a shared eye
gaze (pitch, yaw) and the expression coefficients to the 2D landmarks, identity held fixed. The
model is evaluated by a compact numpy form of the head model's LBS restricted to the landmarks
(exact for neck pose zero, see LandmarkModel), so one iteration costs well under a millisecond.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from savatar.core.drive.fit_quality import fit_warnings
from savatar.core.drive.motion import Motion
from savatar.core.head.head_model import HeadModelData
from savatar.core.render.camera import REAL_FOV_Y_DEG, intrinsics_from_fov

# Camera at the origin, x right, y down, z forward = world (x, -y, -z) (OpenCV convention).
FLIP = np.diag([1.0, -1.0, -1.0])
TRACKING_VIEWMAT = np.diag([1.0, -1.0, -1.0, 1.0])


def project_tracking(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Tracking-world points (N, 3), seen by TRACKING_VIEWMAT and K (3, 3) -> (N, 3) pixel u, v
    and camera depth z."""
    xc = points @ FLIP.T
    z = np.maximum(xc[:, 2], 1e-6)
    return np.stack([K[0, 0] * xc[:, 0] / z + K[0, 2], K[1, 1] * xc[:, 1] / z + K[1, 2], xc[:, 2]], 1)

# MediaPipe Face Mesh face-oval indices: their image positions follow the silhouette, which moves
# over the skin as the head turns, so they get a low weight in the fit.
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                      377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109])


def intrinsics_for(width: int, height: int, fov_y_deg: float = REAL_FOV_Y_DEG) -> np.ndarray:
    """K (3, 3) for a real camera's frame of this size (REAL_FOV_Y_DEG unless told)."""
    return intrinsics_from_fov(width, height, fov_y_deg)


def rodrigues(v: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) -> rotation (3, 3); a plain numpy version because cv2/scipy calls cost more."""
    theta = math.sqrt(float(v @ v))
    k = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    if theta < 1e-8:
        return np.eye(3) + k
    return np.eye(3) + (math.sin(theta) / theta) * k + ((1 - math.cos(theta)) / theta ** 2) * (k @ k)


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) -> axis-angle (3,)."""
    return cv2.Rodrigues(np.ascontiguousarray(r, dtype=np.float64))[0][:, 0]


def _cross_basis(a: np.ndarray) -> np.ndarray:
    """(N, 3) -> (3, N, 3): [:, n, k] = e_k x a_n, the derivative of (d x a_n) with respect to d."""
    out = np.zeros((3, len(a), 3))
    out[1, :, 0], out[2, :, 0] = -a[:, 2], a[:, 1]
    out[0, :, 1], out[2, :, 1] = a[:, 2], -a[:, 0]
    out[0, :, 2], out[1, :, 2] = -a[:, 1], a[:, 0]
    return out


def _float32(a: np.ndarray) -> np.ndarray:
    """a as contiguous float32 with what float32 holds only as a subnormal set to 0: the bases'
    near-zero entries (1e-40 and below) made every Jacobian product run through the CPU's slow
    subnormal path (the fit's normal equations took 1.2 ms a call instead of 0.08)."""
    out = np.ascontiguousarray(a, dtype=np.float32)
    out[np.abs(out) < np.finfo(np.float32).tiny] = 0.0
    return out


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a.T @ b for tall (N, P) matrices, summed over row blocks small enough that OpenBLAS stays on
    one thread: its threaded GEMM on a busy 2-core machine took 4-30 ms for N = 956, P = 48,
    the blocks 0.15 ms (OpenBLAS threads a GEMM above m * n * k = 4 * 65536)."""
    p = a.shape[1]
    rows = max(8, 200_000 // (p * b.shape[1]))
    out = np.zeros((p, b.shape[1]), np.float32)
    for i in range(0, len(a), rows):
        out += a[i:i + rows].T @ b[i:i + rows]
    return out.astype(np.float64)


def mediapipe_indices(data: HeadModelData) -> np.ndarray:
    """(L,) MediaPipe Face Mesh index of each of the head model's landmarks. The open head
    embeds all 478; FLAME embeds the subset its MediaPipe embedding file lists. A model with
    no such map cannot be tracked: ValueError says so."""
    if data.lmk_mediapipe is not None:
        return np.asarray(data.lmk_mediapipe, np.int64)
    raise ValueError(f"{data.name}: no MediaPipe landmark embedding; face tracking needs one "
                     "(for FLAME: mediapipe_landmark_embedding.npz in the FLAME folder)")


class LandmarkModel:
    """The head model's landmarks as an explicit function of (root, translation, jaw, eyes, expr).

    With neck pose zero, LBS of a landmark (barycentric mix of 3 skinned vertices) is exactly
        X = R0 Q + J_root + t,
        Q = c(e) + sum over g in (jaw, left eye, right eye) of R_g q_g(e),
    where q_g = sum_k b_k w_kg v_k - W_g J_g, c collects the root and neck parts plus W_g (J_g - J_root),
    and every term is linear in the expression coefficients e (joints are regressed from the
    expressed template). All of it is precomputed once; per call it is a few small matmuls.
    """

    GROUPS = (2, 3, 4)  # jaw, left eye, right eye joints

    def __init__(self, data: HeadModelData, shape: np.ndarray | None = None,
                 static_offset: np.ndarray | None = None, landmark_offset: np.ndarray | None = None,
                 expr_offset: np.ndarray | None = None, jaw_offset: np.ndarray | None = None):
        """landmark_offset (L, 3): a per-landmark displacement of the rest face (model space),
        skinned like the landmark itself: a driver's neutral face (savatar.core.drive.retarget).
        expr_offset (L, 3, E): a per-landmark change of each expression component's motion (model
        space, per unit), skinned the same way: the motion MediaPipe sees on renders of the
        avatar in place of the mesh's own (savatar.core.drive.calibration.seen_offset).
        jaw_offset (L, 3): the same for the jaw's opening, metres per radian of pose jaw x."""
        f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        v = f64(data.v_template)
        if shape is not None and len(shape):
            s = f64(shape)
            v = v + f64(data.shapedirs)[:, :, :len(s)] @ s
        if static_offset is not None:  # the identity's per-vertex offset, added before LBS (HeadModel)
            v = v + f64(static_offset).reshape(v.shape)
        exprdirs = f64(data.exprdirs)
        self.num_expr = exprdirs.shape[2]
        jreg = f64(data.j_regressor)
        joints = jreg @ v  # (5, 3)
        joints_b = np.einsum("jv,vce->jce", jreg, exprdirs)  # (5, 3, E)
        tri = data.faces[data.lmk_faces]  # (L, 3)
        bary = f64(data.lmk_bary)
        # Per landmark and joint: barycentric mix of the vertices' weights, positions and bases.
        wk = f64(data.lbs_weights)[tri] * bary[:, :, None]  # (L, 3, 5)
        w = wk.sum(1)  # (L, 5)
        p0 = np.einsum("lkj,lkc->ljc", wk, v[tri])  # (L, 5, 3)
        pb = np.einsum("lkj,lkce->ljce", wk, exprdirs[tri])  # (L, 5, 3, E)
        self.num_landmarks = len(tri)
        self.jr0, self.jrb = joints[0], joints_b[0]
        body = [0, 1]
        if landmark_offset is not None:
            # A rigid offset of the landmark's three vertices: each joint carries its weight of it.
            p0 = p0 + w[:, :, None] * f64(landmark_offset)[:, None, :]
        if expr_offset is not None:
            pb = pb + w[:, :, None, None] * f64(expr_offset)[:, None, :, :]
        c0 = p0[:, body].sum(1) - w[:, body].sum(1)[:, None] * joints[0]
        cb = pb[:, body].sum(1) - w[:, body].sum(1)[:, None, None] * joints_b[0]
        self.idx, self.a0, self.ab = [], [], []
        for j in self.GROUPS:
            c0 = c0 + w[:, j, None] * (joints[j] - joints[0])
            cb = cb + w[:, j, None, None] * (joints_b[j] - joints_b[0])
            idx = np.flatnonzero(w[:, j] > 1e-9)
            self.idx.append(idx)
            self.a0.append(p0[idx, j] - w[idx, j, None] * joints[j])
            self.ab.append(pb[idx, j] - w[idx, j, None, None] * joints_b[j])
        self.c0 = c0
        self.jaw_offset = None if jaw_offset is None else f64(jaw_offset)
        # Two layouts of each basis: flat (3L, E) for values, coordinate-first (3, L, E) for Jacobians.
        self.cb_flat = cb.reshape(-1, self.num_expr)
        self.cb3 = _float32(cb.transpose(1, 0, 2))
        self.jrb32 = _float32(self.jrb)
        self.ab_flat = [ab.reshape(-1, self.num_expr) for ab in self.ab]
        self.ab3 = [_float32(ab.transpose(1, 0, 2)) for ab in self.ab]
        self._jac = np.empty((2, self.num_landmarks, 11 + self.num_expr), np.float32)
        self._tmp = np.empty((2, self.num_landmarks, self.num_expr), np.float32)
        # Pose correctives (FLAME has them; the open head has none): kept in the value, left out of
        # the Jacobian where they are a small perturbation.
        posedirs = f64(data.posedirs)
        self.pd = None
        if np.abs(posedirs).max() > 0:
            self.pd = np.einsum("lk,lkcf->lcf", bary, posedirs[tri])  # (L, 3, 36)
            self.pd_w = w  # each skinned by its own landmark weights below

    def rest(self, expr: np.ndarray | None = None) -> np.ndarray:
        """Landmarks (L, 3) with zero pose and translation."""
        return self.evaluate(np.eye(3), np.zeros(3), np.zeros(3), np.zeros(2), self._e(expr))

    def _e(self, expr: np.ndarray | None) -> np.ndarray:
        return np.zeros(self.num_expr) if expr is None else np.asarray(expr, dtype=np.float64)

    def evaluate(self, r0: np.ndarray, t: np.ndarray, jaw: np.ndarray, eyes: np.ndarray, e: np.ndarray) -> np.ndarray:
        """World landmarks X (L, 3) for root rotation r0 (3, 3), translation t (3,), jaw axis-angle (3,),
        eyes (pitch, yaw) (2,) and expression e (E,). Keeps what jacobian() needs."""
        eye_aa = np.array([eyes[0], eyes[1], 0.0])
        rots = [rodrigues(jaw), rodrigues(eye_aa), rodrigues(eye_aa)]
        q = self.c0 + (self.cb_flat @ e).reshape(-1, 3)
        us = []
        for idx, a0, ab, rg in zip(self.idx, self.a0, self.ab_flat, rots):
            u = a0 + (ab @ e).reshape(-1, 3)  # (Lg, 3)
            q[idx] += u @ rg.T
            us.append(u)
        if self.pd is not None:
            q = q + self._correctives(rots)
        if self.jaw_offset is not None:
            q = q + jaw[0] * self.jaw_offset
        rq = q @ r0.T  # R0 Q
        self._state = (r0, rots, us, rq)
        return rq + (self.jr0 + self.jrb @ e) + t

    def jacobian(self, p: np.ndarray) -> np.ndarray:
        """Derivative of image points at the last evaluate(), given p (2, L, 3) = d(pixel)/d(world point).

        Returns (2L, 11 + E) float32, a view of a buffer reused by the next call; rows all u then
        all v; columns root (left perturbation exp(d) R0), translation, jaw (3; right
        perturbation, equal to the axis-angle derivative to first order), eyes (pitch, yaw),
        expression. The expression bases are never rotated: p R0 (and
        p R0 R_g) is contracted with them directly, 3 multiply-adds over (2, L, E) in float32,
        because on a busy machine memory traffic, not arithmetic, is what costs time here.
        """
        r0, rots, us, rq = self._state
        n = self.num_landmarks
        dpose = np.zeros((3, n, 11))
        dpose[:, :, 0:3] = _cross_basis(rq)
        dpose[:, :, 3:6] = np.eye(3)[:, None, :]
        for g, (idx, u, rg) in enumerate(zip(self.idx, us, rots)):
            block = ((r0 @ rg) @ _cross_basis(u).reshape(3, -1)).reshape(3, len(idx), 3)
            if g == 0:
                dpose[:, idx, 6:9] += block
            else:
                dpose[:, idx, 9:11] += block[:, :, :2]
        if self.jaw_offset is not None:
            dpose[:, :, 6] += r0 @ self.jaw_offset.T
        # Written into preallocated buffers: fresh arrays this size come from mmap (glibc's
        # threshold is 128 KiB), and their page faults cost more than the arithmetic.
        jac, tmp = self._jac, self._tmp
        jpose, jexp = jac[:, :, :11], jac[:, :, 11:]
        jpose[...] = p[:, :, 0, None] * dpose[0] + p[:, :, 1, None] * dpose[1] + p[:, :, 2, None] * dpose[2]
        m = (p @ r0).astype(np.float32)[..., None]  # (2, L, 3, 1)
        p32 = p.astype(np.float32)
        np.multiply(m[:, :, 0], self.cb3[0], out=jexp)
        for c in (1, 2):
            np.multiply(m[:, :, c], self.cb3[c], out=tmp)
            jexp += tmp
        jexp += p32 @ self.jrb32
        for idx, ab3, rg in zip(self.idx, self.ab3, rots):
            mg = (m[:, idx][..., 0] @ rg.astype(np.float32))[..., None]
            jexp[:, idx] += mg[:, :, 0] * ab3[0] + mg[:, :, 1] * ab3[1] + mg[:, :, 2] * ab3[2]
        return jac.reshape(2 * n, -1)

    def _correctives(self, rots: list[np.ndarray]) -> np.ndarray:
        """Pose-corrective offsets of Q (L, 3), skinned by the rotation of each landmark's joints."""
        feat = np.zeros(36)
        for j, rg in zip(self.GROUPS, rots):
            feat[9 * (j - 1):9 * j] = (rg - np.eye(3)).ravel()
        off = self.pd @ feat  # (L, 3) in the rest frame
        out = off * self.pd_w[:, :2].sum(1, keepdims=True)
        for j, rg in zip(self.GROUPS, rots):
            out += self.pd_w[:, j, None] * (off @ rg.T)
        return out


@dataclass
class TrackerParams:
    """Fit, filter and no-face settings. Prior weights are in squared pixels per squared unit."""

    fov_y_deg: float = REAL_FOV_Y_DEG
    iterations: int = 4  # LM iterations per warm-started frame
    init_iterations: int = 15  # after solvePnP on the first frame or a re-acquired face
    expr_prior: float = 30.0  # pulls expression towards 0 (ARKit-style coefficients in 0..1)
    jaw_prior: float = 200.0  # on jaw x (opening)
    jaw_side_prior: float = 2e4  # jaw y, z barely move
    eye_prior: float = 300.0
    oval_weight: float = 0.3
    damping: float = 1e-3
    tol: float = 1e-3  # relative cost decrease that ends the iterations
    max_jaw: float = 0.6  # radians
    max_eye: float = 0.6
    max_expr: float = 1.0  # upper bound of expression coefficients (retargeting reads past 1: see retarget)
    hold_s: float = 0.5
    ease_s: float = 1.0
    filter: bool = True
    # One-Euro (jitter_filter). Fast to follow: a blink or a syllable moves the fit several units
    # a second, and the cutoff rises with the speed (beta) as soon as the speed is seen (d_cutoff);
    # at rest it falls to min_cutoff. Measured with bench puppet (real vs render correlation),
    # against the unfiltered fit: 1.5 Hz / 0.5 / 1 Hz lost up to 0.1-0.13 (speech's mouth opening
    # 0.95 -> 0.85, blinks 0.94 -> 0.82); 2 Hz / 5 / 4 Hz loses at most 0.03 (but a head turning
    # half a degree, the size of the jitter: 0.78 -> 0.69) and still removes about 40% of the
    # frame-to-frame jitter.
    min_cutoff: float = 2.0  # Hz
    beta: float = 5.0
    d_cutoff: float = 4.0  # Hz
    static_images: bool = False  # MediaPipe video mode tracks between frames (faster)
    neutral_s: float = 1.0  # seconds of face taken as the driver's neutral (fitters that retarget)


@dataclass
class FitResult:
    """expr (E,); pose (15,) FLAME layout (root = head rotation in the tracking world, neck zero,
    jaw, left eye, right eye); translation (3,) tracking-world metres; confidence in 0..1;
    status "ok" | "no face (holding)" | "no face"; residual_px RMS reprojection error; timings ms."""

    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    confidence: float = 0.0
    status: str = "ok"
    residual_px: float = float("nan")
    timings: dict[str, float] = field(default_factory=dict)
    landmarks: np.ndarray | None = None  # (478, 2) detected pixels, for overlays
    warnings: tuple[str, ...] = ()  # fit_quality: face too small, turned or dark; poor fit
    neutral: str = ""  # "" | "measuring" | "set": the driver's neutral, when the fitter retargets
    head_rotation: np.ndarray | None = None  # (3,) rotation to the camera when pose's root is relative

    def camera_rotation(self) -> np.ndarray:
        """(3,) axis-angle of the head as the camera sees it (0 = facing it)."""
        return self.pose[0:3] if self.head_rotation is None else self.head_rotation

    def vector(self) -> np.ndarray:
        """(E + 18,) expr, pose, translation concatenated (the filtered quantity)."""
        return np.concatenate([self.expr, self.pose, self.translation])


class FaceFitter:
    """Fits pose, jaw, gaze and expression to (L, 2) landmark pixels for camera K (3, 3), for the
    identity shape (S,) and static_offset (V, 3) (both default to the model's mean head).

    fit(points) warm-starts from the previous fit; reset() forgets it, so the next fit starts from
    solvePnP on the neutral landmarks.
    """

    def __init__(self, data: HeadModelData, K: np.ndarray, shape: np.ndarray | None = None,
                 params: TrackerParams | None = None, static_offset: np.ndarray | None = None,
                 landmark_offset: np.ndarray | None = None, expr_offset: np.ndarray | None = None,
                 jaw_offset: np.ndarray | None = None):
        self.params = params or TrackerParams()
        self.model = LandmarkModel(data, shape, static_offset, landmark_offset, expr_offset, jaw_offset)
        self.K = np.asarray(K, dtype=np.float64)
        self.expr_names = list(data.expr_names)
        n, e = self.model.num_landmarks, self.model.num_expr
        self.weights = np.ones(n)
        self.weights[np.isin(mediapipe_indices(data), FACE_OVAL)] = self.params.oval_weight
        self._w2 = np.tile(self.weights, 2)[:, None].astype(np.float32)
        self._jw = np.empty((2 * n, 11 + e), np.float32)
        p = self.params
        self.prior = np.zeros(11 + e)
        self.prior[6:9] = [p.jaw_prior, p.jaw_side_prior, p.jaw_side_prior]
        self.prior[9:11] = p.eye_prior
        self.prior[11:] = p.expr_prior
        self.lower = np.full(11 + e, -np.inf)
        self.upper = np.full(11 + e, np.inf)
        self.lower[6], self.upper[6] = 0.0, p.max_jaw
        self.lower[9:11], self.upper[9:11] = -p.max_eye, p.max_eye
        self.lower[11:], self.upper[11:] = 0.0, p.max_expr
        self.reset()

    def reset(self) -> None:
        self.r0: np.ndarray | None = None
        self.x = np.zeros(11 + self.model.num_expr)  # [unused root slots, t, jaw, eyes, expr]

    def _project(self, xw: np.ndarray, derivative: bool = False):
        """World points (L, 3) -> pixels (L, 2) and, with derivative, d(pixel)/d(world) (2, L, 3)."""
        xc = xw @ FLIP.T
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        iz = 1.0 / np.maximum(xc[:, 2], 1e-3)
        uv = np.stack([fx * xc[:, 0] * iz + cx, fy * xc[:, 1] * iz + cy], 1)
        if not derivative:
            return uv, None
        p = np.zeros((2, len(xw), 3))
        # Camera (x, y, z) = world (x, -y, -z); u = fx x / z + cx, v = fy y / z + cy.
        p[0, :, 0] = fx * iz
        p[0, :, 2] = fx * xc[:, 0] * iz * iz
        p[1, :, 1] = -fy * iz
        p[1, :, 2] = fy * xc[:, 1] * iz * iz
        return uv, p

    def _split(self, x: np.ndarray):
        return x[3:6], x[6:9], x[9:11], x[11:]

    def _residual(self, r0: np.ndarray, x: np.ndarray, pts: np.ndarray):
        """(cost, residuals uv - pts (L, 2), d(pixel)/d(world) (2, L, 3)) at (r0, x); leaves the
        model's state at this point, ready for its jacobian()."""
        uv, p = self._project(self.model.evaluate(r0, *self._split(x)), derivative=True)
        res = uv - pts
        return 0.5 * float((self.weights * (res * res).sum(1)).sum() + (self.prior * x * x).sum()), res, p

    def _init_pose(self, pts: np.ndarray) -> None:
        """Rigid pose from solvePnP on the neutral landmarks (first frame or after a lost face)."""
        rest = self.model.rest()
        ok, rvec, tvec = cv2.solvePnP(rest, pts.astype(np.float64), self.K, None, flags=cv2.SOLVEPNP_EPNP)
        if ok:
            rvec, tvec = cv2.solvePnPRefineLM(rest, pts.astype(np.float64), self.K, None, rvec, tvec)
        rp = cv2.Rodrigues(rvec)[0] if ok else FLIP
        tp = tvec[:, 0] if ok else np.array([0.0, 0.0, 0.5])
        if tp[2] <= 0:  # the mirror solution (behind the camera); start facing the camera instead
            rp, tp = FLIP, np.array([0.0, 0.0, 0.5])
        # X_cam = F (R0 X + t) = Rp X + tp at the rest pose (whose root joint term is already in X).
        self.r0 = FLIP @ rp
        self.x = np.zeros_like(self.x)
        self.x[3:6] = FLIP @ tp

    def fit(self, points: np.ndarray, iterations: int | None = None) -> FitResult:
        """points: (L, 2+) landmark pixels (extra columns such as MediaPipe's z are ignored)."""
        t0 = time.perf_counter()
        pts = np.asarray(points, dtype=np.float64)[:, :2]
        first = self.r0 is None
        if first:
            self._init_pose(pts)
        n_iter = iterations or (self.params.init_iterations if first else self.params.iterations)
        r0, x = self.r0, self.x.copy()
        mu = self.params.damping
        # Every evaluation also yields the projection derivative, so an accepted step needs no
        # second evaluation before its Jacobian; only after a rejected try is the point re-evaluated.
        cost, res, p = self._residual(r0, x, pts)
        stale = False
        for _ in range(n_iter):
            if stale:
                cost, res, p = self._residual(r0, x, pts)
            jac = self.model.jacobian(p)
            jw = np.multiply(jac, self._w2, out=self._jw)
            h = _gram(jw, jac) + np.diag(self.prior)
            # Rows are all u residuals then all v. x[0:3] is always zero (the root lives in r0),
            # so the root gets no prior term.
            g = (res.T.reshape(-1).astype(np.float32) @ jw).astype(np.float64) + self.prior * x
            accepted = False
            for _ in range(3):
                step = self._solve(h, g, x, mu)
                r_new = rodrigues(step[0:3]) @ r0
                x_new = np.clip(x + step, self.lower, self.upper)
                x_new[0:3] = 0.0
                c_new, res_new, p_new = self._residual(r_new, x_new, pts)
                stale = c_new > cost
                if not stale:
                    accepted = True
                    break
                mu *= 10
            if not accepted:
                break
            # Converged (relative decrease below tol): more iterations would only cost time.
            done = cost - c_new < self.params.tol * cost
            r0, x, cost, res, p = r_new, x_new, c_new, res_new, p_new
            mu = max(mu * 0.3, 1e-7)
            if done:
                break
        self.r0, self.x = r0, x
        rms = float(np.sqrt((res ** 2).sum(1).mean()))
        size = float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2
        # Confidence falls as the residual grows relative to the face size (2 % of it gives 0.5).
        conf = 1.0 / (1.0 + (rms / max(0.02 * size, 1e-6)) ** 2)
        t, jaw, eyes, e = self._split(x)
        pose = np.zeros(15)
        pose[0:3] = rotation_vector(r0)
        pose[6:9] = jaw
        pose[9:15] = [eyes[0], eyes[1], 0.0, eyes[0], eyes[1], 0.0]
        return FitResult(e.copy(), pose, t.copy(), conf, "ok", rms,
                         {"fit_ms": (time.perf_counter() - t0) * 1e3}, pts)

    def _solve(self, h: np.ndarray, g: np.ndarray, x: np.ndarray, mu: float) -> np.ndarray:
        """Damped step with the box constraints as an active set: parameters on a bound whose step
        points outwards are held, so the rest are solved without them."""
        n = len(g)
        a = h + np.diag(mu * np.diag(h) + 1e-9)
        step = -np.linalg.solve(a, g)
        held = ((x <= self.lower + 1e-12) & (step < 0)) | ((x >= self.upper - 1e-12) & (step > 0))
        if held.any():
            free = ~held
            step = np.zeros(n)
            step[free] = -np.linalg.solve(a[np.ix_(free, free)], g[free])
        return step


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over a parameter vector, per-element, time-based.

    __call__(x (N,), t seconds) -> filtered (N,). min_cutoff and beta may be scalars or (N,).
    """

    def __init__(self, min_cutoff: float | np.ndarray = 1.0, beta: float | np.ndarray = 0.0,
                 d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


def jitter_filter(params: TrackerParams, expr_count: int) -> OneEuroFilter:
    """The One-Euro filter over FitResult.vector() (expr_count + 18 values) with params' settings.
    Rotations and expressions are smoothed alike; translation (metres) needs a larger beta because
    its speeds are numerically smaller."""
    beta = np.full(expr_count + 18, params.beta)
    beta[expr_count + 15:] = params.beta * 20
    return OneEuroFilter(params.min_cutoff, beta, params.d_cutoff)


class FaceTracker:
    """Landmarks + fit + jitter filter + no-face handling for a stream of frames.

    process(image (H, W, 3) RGB uint8 or float, timestamp seconds) -> FitResult. Without a face the
    last parameters are held for hold_s, then pose (except translation) and expression ease to
    neutral over ease_s. K defaults to intrinsics_for(W, H, params.fov_y_deg) of the first frame.
    shape and static_offset: the identity the fit holds fixed (an avatar's own, so that the avatar
    posed with the results lines up with the image; default the model's mean head).
    """

    def __init__(self, data: HeadModelData, params: TrackerParams | None = None, K: np.ndarray | None = None,
                 shape: np.ndarray | None = None, landmarker=None, static_offset: np.ndarray | None = None,
                 make_fitter: Callable[[np.ndarray], object] | None = None):
        from savatar.core.drive.face_landmarks import FaceLandmarker

        # make_fitter(K) builds the per-frame fitter (default FaceFitter with this identity); one
        # with set_neutral (savatar.core.drive.retarget.Retargeter) gets the driver's neutral:
        # the first params.neutral_s seconds of face, and again on request_neutral().
        self._make_fitter = make_fitter
        self._neutral_pts: list[np.ndarray] = []
        self._neutral_until: float | None = None
        self.data, self.params, self.shape = data, params or TrackerParams(), shape
        self._neutral_wanted = make_fitter is not None and self.params.neutral_s > 0
        self.static_offset = static_offset
        self._mp_index = mediapipe_indices(data)
        self._fixed_k = K
        self.landmarker = landmarker or FaceLandmarker(static_images=self.params.static_images)
        self.fitter: FaceFitter | None = None
        self._size: tuple[int, int] | None = None
        self.filter = jitter_filter(self.params, data.exprdirs.shape[2])
        self.last: FitResult | None = None
        self._last_seen: float | None = None

    def neutral(self) -> FitResult:
        e = self.data.exprdirs.shape[2]
        return FitResult(np.zeros(e), np.zeros(15), np.zeros(3), 0.0, "no face")

    def process(self, image: np.ndarray, timestamp: float) -> FitResult:
        t0 = time.perf_counter()
        full = pts = self.landmarker(image)
        if pts is not None:
            pts = pts[self._mp_index]  # the detected landmarks the model embeds, in its order
        t1 = time.perf_counter()
        timings = {"landmarks_ms": (t1 - t0) * 1e3}
        if pts is None:
            out = self._no_face(timestamp)
            timings["fit_ms"] = 0.0
            timings["total_ms"] = (time.perf_counter() - t0) * 1e3
            out.timings = timings
            return out
        h, w = image.shape[:2]
        if self.fitter is None or self._size != (w, h):
            k = self._fixed_k if self._fixed_k is not None else intrinsics_for(w, h, self.params.fov_y_deg)
            if self._make_fitter is not None:
                self.fitter = self._make_fitter(k)
                # A new camera (frame size) needs the neutral measured again in it.
                self._neutral_wanted = self._neutral_wanted or self.params.neutral_s > 0
            else:
                self.fitter = FaceFitter(self.data, k, self.shape, self.params, self.static_offset)
            self._size = (w, h)
        neutral = self._collect_neutral(pts, timestamp)  # first: the frame that completes it is fitted with it
        fit = self.fitter.fit(pts)
        fit.neutral = neutral
        t2 = time.perf_counter()
        timings["fit_ms"] = (t2 - t1) * 1e3
        if full is not None:
            fit.warnings = tuple(fit_warnings(full, fit.camera_rotation(), fit.residual_px, image))
        if self.params.filter:
            v = self.filter(fit.vector(), timestamp)
            e = len(fit.expr)
            fit.expr, fit.pose, fit.translation = v[:e], v[e:e + 15], v[e + 15:]
        timings["filter_ms"] = (time.perf_counter() - t2) * 1e3
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        fit.timings = timings
        self.last, self._last_seen = fit, timestamp
        return fit

    def request_neutral(self) -> None:
        """Take the next params.neutral_s seconds of face (at least one frame) as the driver's
        resting face (a "neutral" button): that face then drives the avatar's rest face."""
        self._neutral_wanted, self._neutral_pts, self._neutral_until = True, [], None

    def _collect_neutral(self, pts: np.ndarray, timestamp: float) -> str:
        """Gathers resting frames while a neutral is wanted; sets it when the time is up."""
        fitter = self.fitter
        if not hasattr(fitter, "set_neutral"):
            return ""
        if not self._neutral_wanted:
            return "set" if getattr(fitter, "neutral", None) is not None else ""
        if self._neutral_until is None:
            self._neutral_until = timestamp + self.params.neutral_s
        self._neutral_pts.append(np.array(pts, dtype=np.float64))
        if timestamp < self._neutral_until:
            return "measuring"
        fitter.set_neutral(self._neutral_pts)
        self._neutral_wanted, self._neutral_pts, self._neutral_until = False, [], None
        return "set"

    def _no_face(self, timestamp: float) -> FitResult:
        # A lost face re-initialises the fit from solvePnP and restarts the filter, so the avatar
        # does not drift from a stale warm start when the face comes back elsewhere.
        if self.fitter is not None:
            self.fitter.reset()
        self.filter.reset()
        if self.last is None:
            return self.neutral()
        gone = timestamp - self._last_seen
        p = self.params
        if gone <= p.hold_s:
            k, status = 1.0, "no face (holding)"
        else:
            a = min(1.0, (gone - p.hold_s) / max(p.ease_s, 1e-6))
            k, status = 1.0 - a * a * (3 - 2 * a), "no face"  # smoothstep ease
        last = self.last
        return FitResult(last.expr * k, last.pose * k, last.translation.copy(), 0.0, status, float("nan"))

    def close(self) -> None:
        self.landmarker.close()


class VideoReader:
    """Frames of a video file through OpenCV: fps (from the file, 30 when it does not say), count
    (frames the file claims, 0 when unknown) and frames(stride) yielding (index, RGB uint8
    (H, W, 3)) for every stride-th frame; the frames in between are skipped without decoding to
    RGB. OSError when OpenCV cannot open the file. Use as a context manager or call close()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError(f"{path}: cannot open the video (not a video, or a format OpenCV cannot read)")
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(rate) if np.isfinite(rate) and rate > 0 else 30.0
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.count = max(int(count), 0) if np.isfinite(count) else 0

    def frames(self, stride: int = 1):
        stride = max(1, int(stride))
        i = 0
        while True:
            if i % stride:
                if not self._cap.grab():
                    return
            else:
                ok, frame = self._cap.read()
                if not ok:
                    return
                yield i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            i += 1

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


TRACK_SIDE = 1024  # video frames are tracked at most this large (landmarks gain nothing above)


@dataclass
class TrackedFrame:
    """One tracked video frame: index in the video; image RGB uint8 at most TRACK_SIDE a side;
    scale of image against video_size (W, H), the video's frame size; K (3, 3) the camera of
    image (viewmat TRACKING_VIEWMAT); fit the tracker's result (landmarks in image pixels)."""

    index: int
    image: np.ndarray
    scale: float
    video_size: tuple[int, int]
    K: np.ndarray
    fit: FitResult


def track_identity(video: VideoReader, data: HeadModelData, shape: np.ndarray | None = None,
                   static_offset: np.ndarray | None = None, fov_y_deg: float = REAL_FOV_Y_DEG, stride: int = 1,
                   stop: int | None = None) -> Iterator[TrackedFrame]:
    """Track every stride-th frame before frame stop of an open video with a fixed identity
    (shape, static_offset), offline: no smoothing and more fit iterations than live tracking
    (the fit costs about a millisecond; frames may be stride apart, and each one's alignment is
    what counts)."""
    params = TrackerParams(fov_y_deg=fov_y_deg, filter=False, iterations=10, static_images=False)
    tracker: FaceTracker | None = None
    try:
        for i, rgb in video.frames(stride):
            if stop is not None and i >= stop:
                return
            h, w = rgb.shape[:2]
            scale = min(1.0, TRACK_SIDE / max(h, w))
            if scale < 1.0:
                rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            if tracker is None:
                K = intrinsics_for(rgb.shape[1], rgb.shape[0], fov_y_deg)
                tracker = FaceTracker(data, params, K=K, shape=shape, static_offset=static_offset)
            yield TrackedFrame(i, rgb, scale, (w, h), K, tracker.process(rgb, i / video.fps))
    finally:
        if tracker is not None:
            tracker.close()


def track_video(path: str | Path, data: HeadModelData, fps: float | None = None,
                progress: Callable[[int, int], None] | None = None, params: TrackerParams | None = None,
                relative_translation: bool = True) -> Motion:
    """Track every frame of a video file into a Motion (frame rate from the file unless fps given).

    With relative_translation, translations are relative to the first frame with a face, so the
    head starts where the model's rest pose is (the avatar's render camera frames that).
    progress(done, total) is called after each frame (total 0 when the file does not say).
    """
    rows = []
    with VideoReader(path) as video:
        rate = fps or video.fps
        tracker = FaceTracker(data, params)
        try:
            for i, rgb in video.frames():
                r = tracker.process(rgb, i / rate)
                rows.append((r.expr, r.pose, r.translation, r.status == "ok"))
                if progress is not None:
                    progress(i + 1, video.count)
        finally:
            tracker.close()
    if not rows:
        raise OSError(f"{path}: no frames could be read")
    expr = np.stack([r[0] for r in rows]).astype(np.float32)
    pose = np.stack([r[1] for r in rows]).astype(np.float32)
    trans = np.stack([r[2] for r in rows]).astype(np.float32)
    seen = [k for k, r in enumerate(rows) if r[3]]
    if relative_translation:
        ref = trans[seen[0]].copy() if seen else trans[0].copy()
        if seen:
            trans[:seen[0]] = ref  # frames before the first face stay at the rest position
        trans = trans - ref
    return Motion(float(rate), expr, pose, trans, list(data.expr_names))
