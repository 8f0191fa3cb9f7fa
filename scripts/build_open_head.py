"""Regenerate savatar/assets/open_head.npz, the bundled open parametric head model.

Run: python scripts/build_open_head.py [-o PATH] [--measure-landmarks]

Data used, all of it free to ship:
- face geometry measured by MediaPipe Face Mesh (478 landmarks, with irises) on scikit-image's
  public-domain `astronaut` portrait, scaled to metres by the human iris diameter (11.7 mm),
  frontalized, mirror-symmetrized and neutralized (lips closed, smile removed);
- MediaPipe's face-mesh tessellation (Apache-2.0), from its Python package;
- procedural geometry for everything a face detector cannot see: cranium, ears, neck, eyeballs,
  eye sockets, mouth cavity and teeth.

The MediaPipe measurement is committed input data, scripts/open_head_landmarks.npz, because
MediaPipe's float inference differs slightly from one CPU to another. The build reads that file
and runs no model, and no decision in it hinges on the last bit of a float, so it gives the same
arrays (to ~1e-16) on any machine. `--measure-landmarks` re-runs MediaPipe and rewrites the file
before building; tests/core/head/test_open_head_asset.py checks MediaPipe still lands near it.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from savatar.core.head.mesh_ops import boundary_loops

LANDMARKS_FILE = Path(__file__).with_name("open_head_landmarks.npz")
IRIS_DIAMETER_M = 0.0117
EYEBALL_RADIUS = 0.0120
IRIS_ANGLE = np.arcsin(0.5 * IRIS_DIAMETER_M / EYEBALL_RADIUS)
PUPIL_ANGLE = np.arcsin(0.0022 / EYEBALL_RADIUS)

# MediaPipe landmark index sets (face_mesh_connections ordering, subject's left = +x).
INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
RIGHT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [263, 466, 388, 387, 386, 385, 384, 398, 362]
LEFT_EYE_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
RIGHT_BROW = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55]
LEFT_BROW = [300, 293, 334, 296, 336, 276, 283, 282, 295, 285]
NOSE = [1, 2, 4, 5, 6, 19, 94, 97, 98, 326, 327, 168, 195, 197, 48, 278, 64, 294, 129, 358, 219, 439]
RIGHT_IRIS, LEFT_IRIS = 468, 473  # centre; the next four are points on the iris rim

# Expression components, named after ARKit blendshapes where one matches.
EXPR_NAMES = [
    "eyeBlink_L", "eyeBlink_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R",
    "browInnerUp", "browOuterUp_L", "browOuterUp_R", "browDown_L", "browDown_R",
    "mouthSmile_L", "mouthSmile_R", "mouthFrown_L", "mouthFrown_R", "mouthStretch_L", "mouthStretch_R",
    "mouthPucker", "mouthFunnel", "mouthPress_L", "mouthPress_R", "mouthUpperUp_L", "mouthUpperUp_R",
    "mouthLowerDown_L", "mouthLowerDown_R", "mouthRollUpper", "mouthRollLower", "mouthLeft", "mouthRight",
    "mouthDimple_L", "mouthDimple_R", "cheekPuff", "cheekSquint_L", "cheekSquint_R",
    "noseSneer_L", "noseSneer_R", "jawForward",
]
SHAPE_NAMES = [
    "head_width", "head_height", "head_depth", "face_width", "face_length", "jaw_width",
    "chin_length", "chin_protrusion", "nose_length", "nose_width", "nose_protrusion", "nose_bridge",
    "eye_spacing", "eye_size", "eye_height", "mouth_width", "lip_fullness", "cheekbones",
    "forehead_slope", "brow_ridge", "neck_thickness", "cheek_fullness",
]

COLORS = {
    "skin": (0.80, 0.60, 0.50), "lips": (0.66, 0.34, 0.33), "brow": (0.24, 0.17, 0.12),
    "hair": (0.20, 0.14, 0.10), "sclera": (0.93, 0.92, 0.90), "iris": (0.30, 0.22, 0.14),
    "pupil": (0.03, 0.03, 0.03), "mouth": (0.35, 0.10, 0.10), "teeth": (0.92, 0.90, 0.84),
    "socket": (0.45, 0.28, 0.25),
}
REGION_IDS = {"face": 0, "scalp": 1, "neck": 2, "left_eyeball": 3, "right_eyeball": 4,
              "eye_socket": 5, "mouth_cavity": 6, "upper_teeth": 7, "lower_teeth": 8}


# ----------------------------------------------------------------------------- measurement
def measure_landmarks(path: Path = LANDMARKS_FILE) -> None:
    """Run MediaPipe Face Mesh on the astronaut and write its 478 landmarks to path (float64, so
    the float32 model output is kept exactly)."""
    import mediapipe as mp
    import skimage.data

    from savatar.core.drive.face_landmarks import FaceLandmarker

    with FaceLandmarker() as landmarker:
        lm = landmarker(skimage.data.astronaut())
    if lm is None:
        raise RuntimeError("MediaPipe found no face in skimage's astronaut")
    source = (f"MediaPipe {mp.__version__} Face Mesh (static image, refined irises) on skimage.data.astronaut(), "
              "scripts/build_open_head.py --measure-landmarks; pixels: x right, y down, z depth (nearer < 0)")
    np.savez(path, landmarks_px=lm.astype(np.float64), source=np.array(source))


def load_astronaut(path: Path = LANDMARKS_FILE) -> np.ndarray:
    """(478, 3) metric landmarks of the astronaut portrait, x right, y up, z towards the camera,
    from the committed MediaPipe measurement."""
    with np.load(path) as z:
        lm = z["landmarks_px"] * np.array([1.0, -1.0, -1.0])
    rim = lambda c: np.linalg.norm(lm[c + 1] - lm[c + 3]) + np.linalg.norm(lm[c + 2] - lm[c + 4])  # noqa: E731
    scale = IRIS_DIAMETER_M / ((rim(RIGHT_IRIS) + rim(LEFT_IRIS)) / 4)
    return (lm - lm[:468].mean(0)) * scale


def face_triangles() -> np.ndarray:
    """MediaPipe's face-mesh triangles (F, 3), rebuilt from its edge list, consistently wound
    with normals facing +z. Edge 3-cliques that are not faces are the ones whose edges would
    then border three triangles."""
    import mediapipe as mp

    edges = sorted(mp.solutions.face_mesh_connections.FACEMESH_TESSELATION)
    adj = collections.defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    tris = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    count = collections.Counter(e for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))
    tris = [t for t in tris if not all(count[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return orient_consistently(np.array(tris, dtype=np.int64))


def orient_consistently(faces: np.ndarray) -> np.ndarray:
    """Flip triangles so neighbours agree (breadth-first over shared edges)."""
    faces = faces.copy()
    by_edge = collections.defaultdict(list)
    for i, f in enumerate(faces):
        for k in range(3):
            by_edge[frozenset((f[k], f[(k + 1) % 3]))].append(i)
    done = np.zeros(len(faces), bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        queue = collections.deque([seed])
        while queue:
            i = queue.popleft()
            f = faces[i]
            for k in range(3):
                a, b = f[k], f[(k + 1) % 3]
                for j in by_edge[frozenset((a, b))]:
                    if done[j]:
                        continue
                    g = list(faces[j])
                    # A consistent neighbour walks the shared edge the other way (b -> a).
                    if any(g[m] == a and g[(m + 1) % 3] == b for m in range(3)):
                        faces[j] = faces[j][::-1]
                    done[j] = True
                    queue.append(j)
    return faces


def mirror_map(p: np.ndarray) -> np.ndarray:
    """Index of each landmark's mirror partner across x = 0 (optimal assignment)."""
    q = p * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(p[:, None] - q[None], axis=2)
    _, col = linear_sum_assignment(cost)
    return col


def frontalize_and_symmetrize(lm: np.ndarray) -> np.ndarray:
    """Rotate the face so its mirror plane is x = 0 and the brow-to-chin line is vertical, then
    average each landmark with its mirrored partner."""
    p = lm[:468]
    x = p[263] - p[33]
    up = p[9] - p[152]
    x /= np.linalg.norm(x)
    up -= x * (up @ x)
    up /= np.linalg.norm(up)
    rot = np.stack([x, up, np.cross(x, up)])
    lm = lm @ rot.T
    for _ in range(3):  # refine: mirror plane from the reflection that best maps partners
        p = lm[:468]
        m = mirror_map(p)
        c = p.mean(0)
        u, _, vt = np.linalg.svd((p[m] - c).T @ (p - c))
        refl = vt.T @ u.T  # orthogonal map p[m] -> p, det -1 for a mirror
        w, v = np.linalg.eig(refl)
        n = np.real(v[:, np.argmin(np.real(w))])
        n *= np.sign(n[0])
        y = np.array([0.0, 1.0, 0.0]) - n * n[1]
        y /= np.linalg.norm(y)
        rot = np.stack([n, y, np.cross(n, y)])
        lm = (lm - c) @ rot.T
    # Brow (9) above chin (152) vertically, the profile line of a natural head posture.
    d = lm[9] - lm[152]
    a = np.arctan2(d[2], d[1])
    ca, sa = np.cos(a), np.sin(a)
    lm = lm @ np.array([[1, 0, 0], [0, ca, sa], [0, -sa, ca]]).T
    p = lm[:468]
    m = mirror_map(p)
    flip = np.array([-1.0, 1.0, 1.0])
    sym = 0.5 * (p + p[m] * flip)
    # Irises: right (468..472) and left (473..477) mirror each other, rim order mirrored in x.
    iris_r, iris_l = lm[468:473], lm[473:478]
    pair = [0, 3, 2, 1, 4]  # rim points at right/top/left/bottom swap left and right
    sym_r = 0.5 * (iris_r + iris_l[pair] * flip)
    sym_l = sym_r[pair] * flip
    out = np.concatenate([sym, sym_r, sym_l])
    # Recentre: x on the mirror plane, origin between the eyes at the depth of the face.
    out -= np.array([0.0, out[[33, 263], 1].mean(), out[[33, 263], 2].mean()])
    out[:, 0] -= out[:468, 0].mean()
    return out


# ----------------------------------------------------------------------------- fields
def handle_field(x: np.ndarray, handles: np.ndarray, disps: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth displacement (V, 3) interpolating handle displacements (H, 3) near the handles and
    fading to zero beyond about 2 sigma."""
    w = np.exp(-((x[:, None] - handles[None]) ** 2).sum(-1) / (2 * sigma**2))
    return (w @ disps) / np.maximum(w.sum(1), 1.0)[:, None]


def smoothstep(x, e0, e1):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def gauss(x: np.ndarray, centre, sigma) -> np.ndarray:
    """(V,) anisotropic Gaussian falloff; sigma scalar or (3,)."""
    return np.exp(-0.5 * (((x - np.asarray(centre)) / np.asarray(sigma)) ** 2).sum(-1))


# ----------------------------------------------------------------------------- meshing
def subdivide(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One 1-to-4 midpoint subdivision. Old vertices keep their indices. Returns (verts, faces,
    edge_parents (E, 2)) where new vertex V + e is the midpoint of edge_parents[e]."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    uniq, inv = np.unique(np.sort(e, axis=1), axis=0, return_inverse=True)
    mid = len(verts) + inv.reshape(3, -1).T  # (F, 3): midpoints of edges 01, 12, 20
    a, b, c = faces.T
    m01, m12, m20 = mid.T
    new_faces = np.concatenate([np.stack(s, 1) for s in
                                ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    new_verts = np.concatenate([verts, 0.5 * (verts[uniq[:, 0]] + verts[uniq[:, 1]])])
    return new_verts, new_faces, uniq


def loop_strip(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Triangles joining two closed loops of equal length (indices), a[i] beside b[i]."""
    n = len(a)
    i = np.arange(n)
    j = (i + 1) % n
    return np.concatenate([np.stack([a[i], b[i], b[j]], 1), np.stack([a[i], b[j], a[j]], 1)])


def fan(loop: np.ndarray, centre: int) -> np.ndarray:
    n = len(loop)
    i = np.arange(n)
    return np.stack([loop[i], np.full(n, centre), loop[(i + 1) % n]], 1)


class MeshBuilder:
    """Accumulates vertices, faces and per-vertex region labels."""

    def __init__(self):
        self.verts: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.region: list[np.ndarray] = []
        self.count = 0

    def add_verts(self, v: np.ndarray, region: str) -> np.ndarray:
        idx = np.arange(self.count, self.count + len(v))
        self.verts.append(np.asarray(v, dtype=np.float64))
        self.region.append(np.full(len(v), REGION_IDS[region]))
        self.count += len(v)
        return idx

    def add_faces(self, f: np.ndarray) -> None:
        self.faces.append(np.asarray(f, dtype=np.int64))

    def arrays(self):
        return np.concatenate(self.verts), np.concatenate(self.faces), np.concatenate(self.region)


# ----------------------------------------------------------------------------- head shape
class HeadSDF:
    """Signed distance (approximate) of the procedural cranium, jaw, ears and neck."""

    def __init__(self, lm: np.ndarray):
        self.y_eye = 0.0
        self.chin = lm[152]
        self.cheek_x = np.abs(lm[[234, 454], 0]).mean()
        self.nose_z = lm[1, 2]
        self.cranium = (np.array([0.0, 0.012, -0.072]), np.array([self.cheek_x + 0.006, 0.108, 0.100]))
        jaw_c = np.array([0.0, self.chin[1] + 0.040, self.chin[2] - 0.055])
        self.jaw = (jaw_c, np.array([self.cheek_x - 0.012, 0.045, 0.060]))
        self.ear_c = np.array([self.cheek_x + 0.010, -0.015, -0.080])
        self.ear_r = np.array([0.012, 0.031, 0.019])
        self.neck_c = np.array([0.0, 0.0, -0.075])
        self.neck_r = np.array([0.056, 0.060])  # x and z radii
        self.neck_bottom = self.chin[1] - 0.085

    @staticmethod
    def _ellipsoid(p, c, r):
        q = (p - c) / r
        return (np.linalg.norm(q, axis=-1) - 1.0) * r.min()

    @staticmethod
    def _smin(a, b, k):
        h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
        return b * (1 - h) + a * h - k * h * (1 - h)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        d = self._ellipsoid(p, *self.cranium)
        d = self._smin(d, self._ellipsoid(p, *self.jaw), 0.03)
        q = (p[..., [0, 2]] - self.neck_c[[0, 2]]) / self.neck_r
        neck = (np.linalg.norm(q, axis=-1) - 1.0) * self.neck_r.min()
        neck = np.maximum(neck, np.maximum(self.neck_bottom - p[..., 1], p[..., 1] - 0.02))
        d = self._smin(d, neck, 0.035)
        for s in (-1.0, 1.0):
            d = self._smin(d, self._ellipsoid(p, self.ear_c * np.array([s, 1, 1]), self.ear_r), 0.008)
        return d

    def ray(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Distance along each unit dir (N, 3) from origin to the surface (bisection)."""
        lo = np.zeros(len(dirs))
        hi = np.full(len(dirs), 0.5)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            inside = self(origin + mid[:, None] * dirs) < 0
            lo = np.where(inside, mid, lo)
            hi = np.where(inside, hi, mid)
        return 0.5 * (lo + hi)


def _slerp(d0: np.ndarray, d1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Unit directions (len(t), 3) along the great-circle arc from unit d0 to unit d1."""
    om = np.arccos(np.clip(d0 @ d1, -1.0, 1.0))
    if om < 1e-6:
        return np.outer(1 - t, d0) + np.outer(t, d1)
    return (np.outer(np.sin((1 - t) * om), d0) + np.outer(np.sin(t * om), d1)) / np.sin(om)


def build_tube(oval: np.ndarray, sdf: HeadSDF, rows: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Surface from the face-oval loop (N, 3) over the cranium and down the neck to a bottom
    ring. Returns (rows, N, 3) rings (ring 0 is the first ring after the oval) and the bottom
    centre (3,).

    Column i runs from oval point i to bottom point i through a waypoint behind the head that
    moves continuously with the column's angle u around the oval: over the crown for the top
    of the oval, over the ears for its sides, and, below the jaw corners, blending into the
    straight way down to the front of the neck. Neighbouring columns therefore take
    neighbouring paths; great-circle paths had to switch from over the crown to down the side
    between two columns, which folded the skull's surface over itself at the back."""
    n = len(oval)
    centre = np.array([0.0, -0.02, -0.07])
    fc = oval.mean(0)
    u = np.arctan2(oval[:, 1] - fc[1], oval[:, 0] - fc[0])
    bottom = np.stack([sdf.neck_c[0] + sdf.neck_r[0] * np.cos(u) * 0.999,
                       np.full(n, sdf.neck_bottom + 1e-3),
                       sdf.neck_c[2] - sdf.neck_r[1] * np.sin(u) * 0.999], 1)
    samples = 600
    rings = np.zeros((rows, n, 3))
    for i in range(n):
        a, b = oval[i] - centre, bottom[i] - centre
        ea, eb = a / np.linalg.norm(a), b / np.linalg.norm(b)
        sin_u, cos_u = np.sin(u[i]), np.cos(u[i])
        behind = np.array([0.9 * cos_u, 0.2 + 0.8 * max(sin_u, 0.0), -1.0])
        straight = ea + eb
        weight = smoothstep(np.array(sin_u), -0.85, -0.35)  # 0 under the chin, 1 from the jaw corners up
        w = (1 - weight) * straight / np.linalg.norm(straight) + weight * behind / np.linalg.norm(behind)
        w /= np.linalg.norm(w)
        first, second = np.arccos(np.clip(ea @ w, -1, 1)), np.arccos(np.clip(w @ eb, -1, 1))
        # Round, not truncate: under the chin w is the exact bisector, so this is 300 up to
        # rounding error, and truncating made it 299 or 300 depending on the CPU.
        k = max(2, round(samples * first / (first + second)))
        dirs = np.concatenate([_slerp(ea, w, np.linspace(0, 1, k)),
                               _slerp(w, eb, np.linspace(0, 1, samples - k + 1))[1:]])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        r = sdf.ray(centre, dirs)
        # Continue smoothly from the measured oval, which need not lie on the procedural surface.
        r += (np.linalg.norm(a) - r[0]) * (1 - smoothstep(np.linspace(0, 1, samples), 0.0, 0.25))
        pts = centre + r[:, None] * dirs
        pts[-1] = bottom[i]
        arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        s = (np.arange(1, rows + 1) / rows) ** 1.15 * arc[-1]
        for c in range(3):
            rings[:, i, c] = np.interp(s, arc, pts[:, c])
    return relax_tube(oval, rings, sdf, centre), np.array([sdf.neck_c[0], sdf.neck_bottom, sdf.neck_c[2]])


def relax_tube(oval: np.ndarray, rings: np.ndarray, sdf: HeadSDF, centre: np.ndarray,
               iterations: int = 60, free_rows: int = 3) -> np.ndarray:
    """Even out the tube's grid where neighbouring columns diverge (over the crown) with
    umbrella smoothing, projecting back onto the surface after each step. The oval and the
    bottom ring stay fixed; the first rows are only smoothed, which keeps them blending from
    the measured face into the procedural skull."""
    grid = np.concatenate([oval[None], rings])  # (R + 1, N, 3)
    for _ in range(iterations):
        avg = 0.25 * (grid[:-2, :] + grid[2:, :] + np.roll(grid[1:-1], 1, axis=1) + np.roll(grid[1:-1], -1, axis=1))
        new = grid.copy()
        new[1:-1] = grid[1:-1] + 0.6 * (avg - grid[1:-1])
        inner = new[1 + free_rows:-1].reshape(-1, 3)
        d = inner - centre
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        new[1 + free_rows:-1] = (centre + sdf.ray(centre, d)[:, None] * d).reshape(new[1 + free_rows:-1].shape)
        grid = new
    return grid[1:]


def uv_sphere(centre, radius, polar: np.ndarray, segments: int):
    """Sphere with its pole on +z. polar: ring angles in (0, pi). Returns verts (1 + R*S + 1, 3),
    faces, and ring angle per vertex."""
    az = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    pts = [np.array([0.0, 0.0, 1.0])]
    ang = [0.0]
    for t in polar:
        ring = np.stack([np.sin(t) * np.cos(az), np.sin(t) * np.sin(az), np.full(segments, np.cos(t))], 1)
        pts.extend(ring)
        ang.extend([t] * segments)
    pts.append(np.array([0.0, 0.0, -1.0]))
    ang.append(np.pi)
    verts = centre + radius * np.array(pts)
    faces = [fan(1 + np.arange(segments), 0)[:, ::-1]]
    for k in range(len(polar) - 1):
        a = 1 + k * segments + np.arange(segments)
        faces.append(loop_strip(a, a + segments))
    last = 1 + (len(polar) - 1) * segments + np.arange(segments)
    faces.append(fan(last, len(pts) - 1))
    return verts, np.concatenate(faces), np.array(ang)


def teeth_arc(curve_x: np.ndarray, curve_z: np.ndarray, y_top: float, y_bottom: float, depth: float):
    """Closed box-section band along an arc in the x-z plane (front face on the curve)."""
    n = len(curve_x)
    tangent = np.gradient(np.stack([curve_x, curve_z], 1), axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)  # points outwards (towards +z) at the front
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    normal *= np.sign(normal[n // 2, 1])
    front = np.stack([curve_x, curve_z], 1)
    back = front - depth * normal
    rings = []
    section = [(front, y_top), (front, y_bottom), (back, y_bottom), (back, y_top)]
    for xz, y in section:
        rings.append(np.stack([xz[:, 0], np.full(n, y), xz[:, 1]], 1))
    verts = np.concatenate(rings)  # (4n, 3): ring k at k*n
    faces = []
    for k in range(4):
        a = k * n + np.arange(n - 1)
        b = ((k + 1) % 4) * n + np.arange(n - 1)
        faces.append(np.stack([a, b, b + 1], 1))
        faces.append(np.stack([a, b + 1, a + 1], 1))
    for end in (0, n - 1):
        q = [k * n + end for k in range(4)]
        faces.append(np.array([[q[0], q[1], q[2]], [q[0], q[2], q[3]]]))
    return verts, np.concatenate(faces)


# ----------------------------------------------------------------------------- neutral face
def lip_line(p: np.ndarray):
    """Mouth line y(x) and z(x) through the middle of the inner lip contours."""
    mid = 0.5 * (p[INNER_UPPER] + p[INNER_LOWER])
    order = np.argsort(mid[:, 0])
    return (lambda x: np.interp(x, mid[order, 0], mid[order, 1])), mid


def neutralize(p: np.ndarray) -> np.ndarray:
    """Close the lips and remove the smile of the measured face (468 landmarks)."""
    line, mid = lip_line(p)
    corner_x = np.abs(p[[61, 291], 0]).mean()
    centre_y = mid[5, 1]
    target_half_width = 0.026  # a relaxed adult mouth is about 50-55 mm wide
    sx = target_half_width / corner_x
    drop = p[[61, 291], 1].mean() - centre_y + 0.002  # corners end 2 mm below the centre
    lips = {"upper": OUTER_UPPER + INNER_UPPER, "lower": OUTER_LOWER + INNER_LOWER}
    anchors = [2, 98, 327, 152, 175, 199, 50, 280, 205, 425, 33, 263, 133, 362, 234, 454, 6]
    out = p.copy()
    inside = np.abs(p[:, 0]) < corner_x * 1.05
    is_upper = p[:, 1] > line(p[:, 0])
    for side, idx in lips.items():
        inner = INNER_UPPER if side == "upper" else INNER_LOWER
        close = np.interp(p[idx, 0], np.sort(p[inner, 0]), (mid[:, 1] - p[inner, 1])[np.argsort(p[inner, 0])])
        d = np.zeros((len(idx), 3))
        d[:, 0] = (sx - 1) * p[idx, 0]
        d[:, 1] = close - drop * (p[idx, 0] / corner_x) ** 2
        handles = np.concatenate([p[idx], p[anchors]])
        disps = np.concatenate([d, np.zeros((len(anchors), 3))])
        own_side = is_upper if side == "upper" else ~is_upper
        # Across the slit each lip follows only its own handles; away from the mouth both
        # fields apply, half each.
        share = np.where(inside, own_side.astype(float), 0.5)
        out += handle_field(p, handles, disps, 0.010) * share[:, None]
        out[idx] = p[idx] + d
    # The inner contours now meet: make each upper/lower pair one position.
    both = 0.5 * (out[INNER_UPPER] + out[INNER_LOWER])
    out[INNER_UPPER] = both
    out[INNER_LOWER] = both
    return out


# ----------------------------------------------------------------------------- assembly
def build_geometry():
    """Template mesh with region labels and the bookkeeping later steps need."""
    lm = frontalize_and_symmetrize(load_astronaut())
    tris = face_triangles()
    p = lm[:468]
    normals = np.cross(p[tris[:, 1]] - p[tris[:, 0]], p[tris[:, 2]] - p[tris[:, 0]])
    if normals[:, 2].sum() < 0:
        tris = tris[:, ::-1]
    p = neutralize(p)
    face_v, face_f, _ = subdivide(p, tris)
    mb = MeshBuilder()
    face_idx = mb.add_verts(face_v, "face")
    mb.add_faces(face_f)

    loops = sorted(boundary_loops(face_f), key=len)
    oval = loops[-1]
    eye_loops = [lp for lp in loops if set(lp) & {33, 263}]
    mouth_loop = next(lp for lp in loops if 13 in lp)

    sdf = HeadSDF(p)
    rings, bottom_c = build_tube(face_v[oval], sdf)
    prev = oval
    tube_idx = []
    for ring in rings:
        idx = mb.add_verts(ring, "scalp")
        mb.add_faces(loop_strip(prev, idx))
        tube_idx.append(idx)
        prev = idx
    bottom = mb.add_verts(bottom_c[None], "neck")[0]
    mb.add_faces(fan(prev, bottom))

    # Eyeballs (pole on +z) centred behind the measured irises, sockets closing the eye holes.
    eyes = {}
    polar = np.concatenate([[PUPIL_ANGLE * 0.5, PUPIL_ANGLE, 0.5 * (PUPIL_ANGLE + IRIS_ANGLE), IRIS_ANGLE,
                             IRIS_ANGLE + 0.12], np.linspace(0.75, np.pi - 0.25, 9)])
    for name, iris, loop in (("left_eyeball", LEFT_IRIS, next(lp for lp in eye_loops if 263 in lp)),
                             ("right_eyeball", RIGHT_IRIS, next(lp for lp in eye_loops if 33 in lp))):
        c = lm[iris] - np.array([0.0, 0.0, EYEBALL_RADIUS * np.cos(IRIS_ANGLE)])
        # Keep the lid margin at least 0.8 mm outside the eyeball.
        lid_gap = np.linalg.norm(face_v[loop] - c, axis=1).min() - EYEBALL_RADIUS
        c[2] -= max(0.0, 0.0008 - lid_gap)
        ev, ef, ang = uv_sphere(c, EYEBALL_RADIUS, polar, 24)
        idx = mb.add_verts(ev, name)
        mb.add_faces(ef + idx[0])
        eyes[name] = dict(centre=c, idx=idx, angle=ang, iris=iris)
        inner = c + 0.85 * EYEBALL_RADIUS * (face_v[loop] - c) / np.linalg.norm(face_v[loop] - c, axis=1, keepdims=True)
        sock = mb.add_verts(inner, "eye_socket")
        mb.add_faces(loop_strip(loop, sock))
        mb.add_faces(fan(sock, mb.add_verts(c[None], "eye_socket")[0]))

    # Mouth cavity behind the closed lips, and teeth.
    line, _ = lip_line(p)
    mv = face_v[mouth_loop]
    corner_x = np.abs(mv[:, 0]).max()
    upper = np.isin(mouth_loop, INNER_UPPER) | (mv[:, 1] > line(mv[:, 0]) + 1e-6)
    # Midpoint vertices of the collapsed slit: decide the side by their parents' side in the loop order.
    sign = np.where(upper, 1.0, -1.0)
    sign[np.abs(mv[:, 0]) >= corner_x - 1e-6] = 0.0
    loop_pos = mv.copy()
    half = np.sqrt(np.clip(1 - (mv[:, 0] / corner_x) ** 2, 0, 1))
    prev = mouth_loop
    for back, open_, sx in ((0.003, 0.009, 1.0), (0.012, 0.016, 0.95), (0.035, 0.014, 0.75), (0.05, 0.006, 0.4)):
        ring = loop_pos.copy()
        ring[:, 0] *= sx
        ring[:, 1] = line(mv[:, 0]) + sign * open_ * np.maximum(half, 0.35)
        ring[:, 2] -= back
        idx = mb.add_verts(ring, "mouth_cavity")
        mb.add_faces(loop_strip(prev, idx))
        prev = idx
    cav_c = np.array([0.0, line(np.array([0.0]))[0], mv[:, 2].mean() - 0.055])
    mb.add_faces(fan(prev, mb.add_verts(cav_c[None], "mouth_cavity")[0]))

    y0 = line(np.array([0.0]))[0]
    z0 = p[INNER_UPPER + INNER_LOWER, 2].max()
    xs = np.linspace(-0.022, 0.022, 15)
    for name, ztop, yt, yb in (("upper_teeth", z0 - 0.0035, y0 + 0.0105, y0 + 0.0003),
                               ("lower_teeth", z0 - 0.0050, y0 - 0.0003, y0 - 0.0095)):
        zs = ztop - 0.012 * (xs / 0.022) ** 2
        tv, tf = teeth_arc(xs, zs, yt, yb, 0.006)
        idx = mb.add_verts(tv, name)
        mb.add_faces(tf + idx[0])

    verts, faces, region = mb.arrays()
    faces = orient_outwards(verts, faces)
    info = dict(lm=lm, p=p, face_idx=face_idx, eyes=eyes, sdf=sdf, line=line, oval=oval,
                mouth_loop=mouth_loop, eye_loops=eye_loops, tube_idx=np.concatenate(tube_idx))
    return verts, faces, region, info


def orient_outwards(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Consistent winding per connected component, flipped so each encloses positive volume."""
    faces = orient_consistently(faces)
    n = len(verts)
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in faces:
        for x, y in ((a, b), (b, c)):
            rx, ry = root(x), root(y)
            if rx != ry:
                parent[rx] = ry
    comp = np.array([root(f[0]) for f in faces])
    tri = verts[faces]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    for c in np.unique(comp):
        sel = comp == c
        if vol[sel].sum() < 0:
            faces[sel] = faces[sel][:, ::-1]
    return faces


def base_colors(verts: np.ndarray, region: np.ndarray, info: dict) -> np.ndarray:
    col = np.tile(np.array(COLORS["skin"]), (len(verts), 1))
    rid = {k: region == v for k, v in REGION_IDS.items()}
    col[rid["eye_socket"]] = COLORS["socket"]
    col[rid["mouth_cavity"]] = COLORS["mouth"]
    col[rid["upper_teeth"] | rid["lower_teeth"]] = COLORS["teeth"]
    for name in ("left_eyeball", "right_eyeball"):
        e = info["eyes"][name]
        ang = e["angle"]
        c = np.where(ang <= PUPIL_ANGLE + 1e-6, 0, np.where(ang <= IRIS_ANGLE + 1e-6, 1, 2))
        palette = np.array([COLORS["pupil"], COLORS["iris"], COLORS["sclera"]])
        col[e["idx"]] = palette[c]
    p = info["p"]
    v = verts
    face = rid["face"]
    # Lips: between the outer contours, inside the mouth corners.
    ox = np.sort(p[OUTER_UPPER, 0])
    up_y = np.interp(v[:, 0], ox, p[OUTER_UPPER, 1][np.argsort(p[OUTER_UPPER, 0])])
    lo_y = np.interp(v[:, 0], np.sort(p[OUTER_LOWER, 0]), p[OUTER_LOWER, 1][np.argsort(p[OUTER_LOWER, 0])])
    corner_x = np.abs(p[[61, 291], 0]).mean()
    # The corners themselves sit exactly at corner_x: a tolerance keeps them lips whatever the last bit.
    lip = face & (np.abs(v[:, 0]) <= corner_x + 1e-9) & (v[:, 1] <= up_y + 5e-4) & (v[:, 1] >= lo_y - 5e-4)
    col[lip] = COLORS["lips"]
    # Brows: soft dark band around the brow landmarks.
    brow = np.zeros(len(v))
    for idx in (LEFT_BROW, RIGHT_BROW):
        d = np.linalg.norm(v[:, None] - p[idx][None], axis=2).min(1)
        brow = np.maximum(brow, 0.85 * (1 - smoothstep(d, 0.003, 0.008)))
    brow *= face
    col = col * (1 - brow[:, None]) + np.array(COLORS["brow"]) * brow[:, None]
    # Lash line on the upper lids, a few millimetres wide: a closed eye is then a dark line where
    # the lids meet, as on a real face. With a thin line (0.5-2.2 mm) the closed lids rendered as
    # plain skin and MediaPipe placed open lids on them (eye opening read 0.15 of the inter-ocular
    # distance on a full blink of the default avatar, more than at rest), so blinks could not be
    # puppeteered; with this one it reads 0.03-0.06 closed.
    lash = np.zeros(len(v))
    for idx in (LEFT_EYE_UPPER, RIGHT_EYE_UPPER):
        d = np.linalg.norm(v[:, None] - p[idx][None], axis=2).min(1)
        lash = np.maximum(lash, 1 - smoothstep(d, 0.002, 0.005))
    lash *= face
    col = col * (1 - 0.95 * lash[:, None]) + 0.95 * np.array(COLORS["brow"]) * lash[:, None]
    # Short hair over the cranium and the back of the head, not on the ears or the face.
    sdf = info["sdf"]
    scalp = rid["scalp"]
    hair = smoothstep(v[:, 1], 0.035, 0.07) * smoothstep(-v[:, 2], -0.03, 0.0)
    hair = np.maximum(hair, smoothstep(-v[:, 2], 0.08, 0.115) * smoothstep(v[:, 1], sdf.chin[1] + 0.04, sdf.chin[1] + 0.075))
    hair *= scalp
    col = col * (1 - hair[:, None]) + np.array(COLORS["hair"]) * hair[:, None]
    return col.astype(np.float32)


def solve_regressor(verts: np.ndarray, candidates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-norm weights over candidate vertices, summing to 1, that reproduce target exactly
    on the template; the joint then follows those vertices under shape changes."""
    a = np.concatenate([verts[candidates].T, np.ones((1, len(candidates)))])  # (4, C)
    w = np.linalg.lstsq(a, np.append(target, 1.0), rcond=None)[0]
    return w


def skeleton(verts: np.ndarray, region: np.ndarray, info: dict):
    """Joint positions, regressor (5, V), parents and skinning weights (V, 5)."""
    sdf, line, p = info["sdf"], info["line"], info["p"]
    eyes = info["eyes"]
    y_mouth = line(np.array([0.0]))[0]
    joints = np.array([
        [0.0, sdf.neck_bottom + 0.02, sdf.neck_c[2]],          # root: base of the neck
        [0.0, sdf.chin[1] + 0.005, sdf.neck_c[2] - 0.005],     # neck: top of the spine
        [0.0, y_mouth + 0.035, sdf.ear_c[2] + 0.012],          # jaw: temporomandibular axis
        eyes["left_eyeball"]["centre"], eyes["right_eyeball"]["centre"],
    ])
    reg = np.zeros((5, len(verts)))
    tube = info["tube_idx"]
    for j in range(3):
        cand = tube[np.argsort(np.linalg.norm(verts[tube] - joints[j], axis=1))[:24]]
        reg[j, cand] = solve_regressor(verts, cand, joints[j])
    for j, name in ((3, "left_eyeball"), (4, "right_eyeball")):
        idx = eyes[name]["idx"]
        reg[j, idx] = 1.0 / len(idx)  # a sphere's vertex mean is its centre
    parents = np.array([-1, 0, 1, 1, 1])

    v = verts
    rid = {k: region == i for k, i in REGION_IDS.items()}
    corner_x = np.abs(p[[61, 291], 0]).mean()
    # Jaw: below the mouth line (sharp across the slit, soft beyond the corners), in front of
    # the jaw hinge, fading out under the chin into the neck.
    beyond = np.maximum(np.abs(v[:, 0]) - corner_x, 0.0)
    softness = 0.0004 + 0.8 * beyond
    below = 1.0 / (1.0 + np.exp(np.clip((v[:, 1] - line(v[:, 0])) / softness, -50, 50)))
    jaw = below * smoothstep(v[:, 2], sdf.ear_c[2] + 0.005, sdf.ear_c[2] + 0.045)
    jaw *= smoothstep(v[:, 1], sdf.chin[1] - 0.03, sdf.chin[1] + 0.005)
    jaw[rid["lower_teeth"]] = 1.0
    jaw[rid["upper_teeth"] | rid["left_eyeball"] | rid["right_eyeball"] | rid["eye_socket"]] = 0.0
    cav = rid["mouth_cavity"]
    jaw[cav] = smoothstep(line(v[cav, 0]) - v[cav, 1], -0.004, 0.004)
    root = smoothstep(v[:, 1], sdf.chin[1] - 0.03, sdf.neck_bottom + 0.005) * (1 - jaw)
    weights = np.zeros((len(v), 5))
    weights[:, 0] = root
    weights[:, 2] = jaw
    weights[:, 1] = 1 - root - jaw
    for j, name in ((3, "left_eyeball"), (4, "right_eyeball")):
        weights[eyes[name]["idx"]] = 0.0
        weights[eyes[name]["idx"], j] = 1.0
    return joints, reg, parents, weights


class FieldMaker:
    """Builds displacement fields (V, 3) from landmark handles on the neutral template."""

    def __init__(self, verts: np.ndarray, region: np.ndarray, info: dict):
        self.v = verts
        self.p = info["p"]
        self.mirror = mirror_map(self.p)
        self.region = region
        self.line = info["line"]
        corner_x = np.abs(self.p[[61, 291], 0]).mean()
        beyond = np.maximum(np.abs(verts[:, 0]) - corner_x, 0.0)
        self.below = 1.0 / (1.0 + np.exp(np.clip((verts[:, 1] - self.line(verts[:, 0])) / (0.0004 + 0.8 * beyond), -50, 50)))
        self.deformable = np.isin(region, [REGION_IDS["face"], REGION_IDS["scalp"], REGION_IDS["neck"]]).astype(float)
        self.anchor_idx = [6, 168, 2, 152, 234, 454, 10, 127, 356]

    def side(self, idx: list[int], side: int) -> list[int]:
        """Landmarks of the left (+1) side given as left-side indices, mirrored for the right."""
        return list(idx) if side > 0 else [int(self.mirror[i]) for i in idx]

    def field(self, idx, disp, sigma=0.010, anchors=(), lip: str | None = None, side: int = 1) -> np.ndarray:
        """Handles at landmarks idx move by disp ((3,) or (H, 3)); anchors stay put. idx, disp
        and anchors are given for the left side; side -1 mirrors all three, so a right-side
        component is the mirror image of its left twin. lip 'upper'/'lower' keeps the field on
        that side of the mouth slit."""
        idx = self.side(idx, side)
        disp = np.broadcast_to(np.asarray(disp, dtype=np.float64), (len(idx), 3)).copy()
        disp[:, 0] *= side
        anchors = [a for a in self.side(list(anchors), side) + self.anchor_idx if a not in idx]
        handles = np.concatenate([self.p[idx], self.p[anchors]])
        disps = np.concatenate([disp, np.zeros((len(anchors), 3))])
        f = handle_field(self.v, handles, disps, sigma)
        if lip == "upper":
            f *= (1 - self.below)[:, None]
        elif lip == "lower":
            f *= self.below[:, None]
        return f * self.deformable[:, None]


def lid_targets(fm: FieldMaker, upper: list[int], lower: list[int], centre: np.ndarray) -> np.ndarray:
    """Displacements taking the upper-lid landmarks onto the lower lid, kept just in front of
    the eyeball so a closing lid never cuts into it."""
    p = fm.p
    order = np.argsort(p[lower, 0])
    tgt = p[upper].copy()
    tgt[:, 1] = np.interp(p[upper, 0], p[lower, 0][order], p[lower, 1][order])
    d = tgt - centre
    tgt = centre + d / np.linalg.norm(d, axis=1, keepdims=True) * max(np.linalg.norm(p[upper] - centre, axis=1).mean(),
                                                                  EYEBALL_RADIUS + 0.0012)
    return tgt - p[upper]


def expression_basis(verts: np.ndarray, region: np.ndarray, info: dict, weights: np.ndarray) -> np.ndarray:
    """(V, 3, E) expression blendshapes, one per EXPR_NAMES entry, coefficient 1 = full."""
    fm = FieldMaker(verts, region, info)
    eyes = info["eyes"]
    inner_brow, outer_brow = [336, 296, 285, 295], [300, 293, 276, 283, 334]
    lips_up, lips_lo = OUTER_UPPER + INNER_UPPER[1:-1], OUTER_LOWER + INNER_LOWER[1:-1]
    lips_all = OUTER_UPPER + OUTER_LOWER[1:-1] + INNER_UPPER[1:-1] + INNER_LOWER[1:-1]
    left_up = [i for i in lips_up if fm.p[i, 0] > 1e-4]
    left_lo = [i for i in lips_lo if fm.p[i, 0] > 1e-4]
    corner = [291, 308]
    cheek = [425, 411, 427]
    under_eye = [346, 347, 348, 349, 350, 330]
    out: dict[str, np.ndarray] = {}
    for s, tag in ((1, "L"), (-1, "R")):
        eye = eyes["left_eyeball" if s > 0 else "right_eyeball"]["centre"]
        up = fm.side(LEFT_EYE_UPPER[1:-1], s)
        lo = fm.side(LEFT_EYE_LOWER[1:-1], s)
        blink = lid_targets(fm, up, lo, eye)
        blink[:, 0] *= s  # field() mirrors x again for the right side
        lower_lid = LEFT_EYE_LOWER
        out[f"eyeBlink_{tag}"] = fm.field(LEFT_EYE_UPPER[1:-1], blink, 0.0045, anchors=lower_lid + LEFT_BROW, side=s)
        out[f"eyeSquint_{tag}"] = (fm.field(LEFT_EYE_LOWER[1:-1], [0, 0.0022, 0.0004], 0.005, anchors=LEFT_BROW, side=s)
                                   + fm.field(under_eye, [0, 0.0015, 0.0008], 0.008, anchors=LEFT_EYE_UPPER, side=s))
        out[f"eyeWide_{tag}"] = fm.field(LEFT_EYE_UPPER[1:-1], [0, 0.0025, 0.0006], 0.005, anchors=lower_lid, side=s)
        out[f"browOuterUp_{tag}"] = fm.field(outer_brow, [0, 0.006, 0.0], 0.012, anchors=LEFT_EYE_LOWER, side=s)
        out[f"browDown_{tag}"] = fm.field(LEFT_BROW, [-0.0025, -0.004, 0.001], 0.011, anchors=LEFT_EYE_LOWER, side=s)
        out[f"mouthSmile_{tag}"] = (fm.field(corner, [0.006, 0.008, -0.003], 0.012, side=s)
                                    + fm.field(cheek, [0.001, 0.003, 0.0015], 0.012, anchors=corner, side=s))
        out[f"mouthFrown_{tag}"] = fm.field(corner, [0.001, -0.006, -0.001], 0.012, side=s)
        out[f"mouthStretch_{tag}"] = fm.field(corner, [0.006, -0.002, -0.002], 0.012, side=s)
        out[f"mouthPress_{tag}"] = (fm.field(left_up, [0, -0.0015, -0.001], 0.006, lip="upper", side=s)
                                    + fm.field(left_lo, [0, 0.0015, -0.001], 0.006, lip="lower", side=s))
        out[f"mouthUpperUp_{tag}"] = fm.field(left_up, [0, 0.0045, 0.0005], 0.007, lip="upper", anchors=corner, side=s)
        out[f"mouthLowerDown_{tag}"] = fm.field(left_lo, [0, -0.0045, 0.0005], 0.007, lip="lower", anchors=corner, side=s)
        out[f"mouthDimple_{tag}"] = fm.field(corner, [0.002, 0.0, -0.003], 0.009, side=s)
        out[f"cheekSquint_{tag}"] = fm.field(under_eye + [425], [0, 0.003, 0.001], 0.01, anchors=LEFT_EYE_UPPER, side=s)
        out[f"noseSneer_{tag}"] = (fm.field([358, 279, 429], [0, 0.003, 0.0005], 0.007, side=s)
                                   + fm.field([285, 295], [-0.001, -0.002, 0], 0.008, side=s))
    out["browInnerUp"] = fm.field(inner_brow + fm.side(inner_brow, -1), [0, 0.006, 0.0], 0.012,
                                  anchors=LEFT_EYE_LOWER + fm.side(LEFT_EYE_LOWER, -1))
    pucker = np.stack([-0.45 * fm.p[lips_all, 0], np.zeros(len(lips_all)), 0.008 * np.ones(len(lips_all))], 1)
    out["mouthPucker"] = fm.field(lips_all, pucker, 0.009)
    funnel = pucker * np.array([0.6, 1, 0.8])
    funnel[:, 1] = np.where(np.isin(lips_all, lips_up), 0.003, -0.003)
    out["mouthFunnel"] = (fm.field([i for i in lips_all if i in lips_up], funnel[np.isin(lips_all, lips_up)], 0.008, lip="upper")
                          + fm.field([i for i in lips_all if i not in lips_up], funnel[~np.isin(lips_all, lips_up)], 0.008, lip="lower"))
    out["mouthRollUpper"] = fm.field(OUTER_UPPER[1:-1], [0, -0.002, -0.003], 0.006, lip="upper")
    out["mouthRollLower"] = fm.field(OUTER_LOWER[1:-1], [0, 0.002, -0.003], 0.006, lip="lower")
    out["mouthLeft"] = fm.field(lips_all, [0.006, 0, 0], 0.012)
    out["mouthRight"] = fm.field(lips_all, [-0.006, 0, 0], 0.012)
    puff = [205, 425, 50, 280, 187, 411, 207, 427]
    out["cheekPuff"] = fm.field(puff, np.stack([np.sign(fm.p[puff, 0]) * 0.005, np.zeros(8), np.full(8, 0.003)], 1), 0.014,
                                anchors=lips_all + [1, 4])
    jaw_fwd = np.zeros((len(verts), 3))
    jaw_fwd[:, 2] = 0.004 * weights[:, 2]
    out["jawForward"] = jaw_fwd
    return np.stack([out[n] for n in EXPR_NAMES], 2).astype(np.float32)


def shape_basis(verts: np.ndarray, region: np.ndarray, info: dict) -> np.ndarray:
    """(V, 3, S) identity modes, one per SHAPE_NAMES entry; coefficient 1 is about one standard
    deviation of adult variation (a few millimetres). Eyeballs and teeth move rigidly."""
    fm = FieldMaker(verts, region, info)
    fm.deformable = np.ones(len(verts))
    v, p, sdf = verts, fm.p, info["sdf"]
    both = lambda idx: list(idx) + fm.side(idx, -1)  # noqa: E731
    face_w = gauss(v, [0, -0.03, 0.02], [0.07, 0.08, 0.06])
    modes = {
        "head_width": np.stack([0.04 * v[:, 0], 0 * v[:, 0], 0 * v[:, 0]], 1),
        "head_height": np.stack([0 * v[:, 0], 0.05 * np.maximum(v[:, 1], 0), 0 * v[:, 0]], 1),
        "head_depth": np.stack([0 * v[:, 0], 0 * v[:, 0], 0.05 * np.minimum(v[:, 2] + 0.03, 0)], 1),
        "face_width": np.stack([0.04 * v[:, 0] * face_w, 0 * v[:, 0], 0 * v[:, 0]], 1),
        "face_length": np.stack([0 * v[:, 0], 0.06 * np.minimum(v[:, 1] - p[2, 1], 0) * face_w, 0 * v[:, 0]], 1),
        "jaw_width": fm.field(both([361, 288, 397]), np.array([[0.004, 0, 0]] * 3 + [[-0.004, 0, 0]] * 3), 0.02),
        "chin_length": fm.field([152, 175, 199, 148, 377], [0, -0.004, 0], 0.018),
        "chin_protrusion": fm.field([152, 175, 199, 148, 377], [0, 0, 0.004], 0.018),
        "nose_length": fm.field([1, 2, 4, 19, 94], [0, -0.003, 0.0005], 0.008),
        "nose_width": fm.field(both([294, 327, 358, 278]), np.array([[0.0025, 0, 0]] * 4 + [[-0.0025, 0, 0]] * 4), 0.007),
        "nose_protrusion": fm.field([1, 4, 19, 5], [0, 0, 0.004], 0.009),
        "nose_bridge": fm.field([6, 197, 195, 168], [0, 0, 0.0025], 0.008),
        "eye_spacing": fm.field(both(LEFT_EYE_UPPER + LEFT_EYE_LOWER), np.array([[0.0025, 0, 0]] * 18 + [[-0.0025, 0, 0]] * 18), 0.01),
        "eye_size": fm.field(both(LEFT_EYE_UPPER + LEFT_EYE_LOWER),
                             0.08 * (p[both(LEFT_EYE_UPPER + LEFT_EYE_LOWER)] - np.repeat([p[LEFT_EYE_UPPER + LEFT_EYE_LOWER].mean(0),
                                                                                p[fm.side(LEFT_EYE_UPPER + LEFT_EYE_LOWER, -1)].mean(0)], 18, 0))
                             * [1, 1, 0], 0.006),
        "eye_height": fm.field(both(LEFT_EYE_UPPER + LEFT_EYE_LOWER), [0, 0.003, 0], 0.012),
        "mouth_width": fm.field(OUTER_UPPER + OUTER_LOWER, 0.1 * p[OUTER_UPPER + OUTER_LOWER] * [1, 0, 0], 0.01),
        "lip_fullness": (fm.field(OUTER_UPPER[1:-1], [0, 0.0015, 0.0015], 0.006, lip="upper")
                         + fm.field(OUTER_LOWER[1:-1], [0, -0.0015, 0.0015], 0.006, lip="lower")),
        "cheekbones": fm.field(both([345, 352, 346]), np.array([[0.003, 0, 0.001]] * 3 + [[-0.003, 0, 0.001]] * 3), 0.015),
        "forehead_slope": np.stack([0 * v[:, 0], 0 * v[:, 0], 0.06 * np.maximum(v[:, 1] - 0.02, 0) * smoothstep(v[:, 2], -0.04, 0.0)], 1),
        "brow_ridge": fm.field(both(LEFT_BROW), [0, 0, 0.0025], 0.01),
        "neck_thickness": np.stack([0.06 * (v[:, 0] - sdf.neck_c[0]), 0 * v[:, 0], 0.06 * (v[:, 2] - sdf.neck_c[2])], 1)
        * smoothstep(-v[:, 1], -sdf.chin[1], -sdf.chin[1] + 0.04)[:, None],
        "cheek_fullness": fm.field(both([425, 411, 427]), np.array([[0.003, 0, 0.002]] * 3 + [[-0.003, 0, 0.002]] * 3), 0.014),
    }
    basis = np.stack([modes[n] for n in SHAPE_NAMES], 2)
    for name in ("left_eyeball", "right_eyeball", "upper_teeth", "lower_teeth"):
        sel = region == REGION_IDS[name]
        basis[sel] = basis[sel].mean(0, keepdims=True)
    return basis.astype(np.float32)


def landmark_embedding(faces: np.ndarray, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """478 MediaPipe landmarks as (face index, barycentric) on the template: the 468 face-mesh
    landmarks are the first 468 vertices; iris centres and rims lie on the eyeballs."""
    first_face = {}
    for fi, f in enumerate(faces):
        for k, vi in enumerate(f):
            first_face.setdefault(int(vi), (fi, k))
    targets = list(range(468))
    lm = info["lm"]
    for name, c in (("right_eyeball", RIGHT_IRIS), ("left_eyeball", LEFT_IRIS)):
        idx = info["eyes"][name]["idx"]
        targets.append(int(idx[0]))  # the front pole is the pupil centre
        for k in range(1, 5):
            d = lm[c + k] - lm[c]
            j = int(round(np.arctan2(d[1], d[0]) / (2 * np.pi / 24))) % 24
            targets.append(int(idx[1 + 3 * 24 + j]))  # ring 3 of the eyeball is the iris rim
    lmk_faces = np.array([first_face[t][0] for t in targets])
    bary = np.zeros((len(targets), 3), np.float32)
    bary[np.arange(len(targets)), [first_face[t][1] for t in targets]] = 1.0
    return lmk_faces, bary


def build() -> dict[str, np.ndarray]:
    verts, faces, region, info = build_geometry()
    joints, reg, parents, weights = skeleton(verts, region, info)
    lmk_faces, lmk_bary = landmark_embedding(faces, info)
    return {
        "v_template": verts.astype(np.float32),
        "faces": faces.astype(np.int32),
        "shapedirs": shape_basis(verts, region, info),
        "exprdirs": expression_basis(verts, region, info, weights),
        "j_regressor": reg.astype(np.float32),
        "parents": parents.astype(np.int32),
        "lbs_weights": weights.astype(np.float32),
        "lmk_faces": lmk_faces.astype(np.int32),
        "lmk_bary": lmk_bary,
        "vertex_colors": base_colors(verts, region, info),
        "region": region.astype(np.int8),
        "region_names": np.array(list(REGION_IDS)),
        "shape_names": np.array(SHAPE_NAMES),
        "expr_names": np.array(EXPR_NAMES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path,
                        default=Path(__file__).resolve().parents[1] / "savatar" / "assets" / "open_head.npz")
    parser.add_argument("--measure-landmarks", action="store_true",
                        help=f"re-run MediaPipe on the astronaut and rewrite {LANDMARKS_FILE.name} before building")
    args = parser.parse_args()
    if args.measure_landmarks:
        measure_landmarks()
    arrays = build()
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output}: {len(arrays['v_template'])} vertices, {len(arrays['faces'])} faces")


if __name__ == "__main__":
    main()
