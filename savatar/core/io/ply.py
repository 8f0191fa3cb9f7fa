"""3D Gaussian Splatting PLY files: export for other 3DGS viewers, import of 3DGS scenes and of
GaussianAvatars results.

The INRIA 3DGS layout (what the reference code, SuperSplat, gsplat's examples and most viewers
read): one `vertex` element, float32 properties in the order
x y z nx ny nz f_dc_0..2 f_rest_0..3(K-1)-1 opacity scale_0..2 rot_0..3, with normals zero,
f_dc the SH DC coefficients per channel, f_rest channel-major (all R coefficients of bands >= 1,
then all G, then all B), opacity as a logit, scales as logs and rot a wxyz quaternion.

GaussianAvatars (Qian et al., CVPR 2024) saves its rigged Gaussians in the same layout plus a
`binding_0` property (the parent FLAME face, stored as float32 like every other property) and puts
the tracked FLAME parameters next to it in `flame_param.npz`. Its per-Gaussian values are
face-local with the same meaning as ours (docs/conventions.md); see `import_gaussian_avatars` for the
checked details and the one historical difference.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from savatar.core.gaussians.binding import deform, face_frames, matrix_to_quat, quat_multiply
from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians, sh_degree_of
from savatar.core.head.head_model import HeadModel, HeadModelData
from savatar.core.io.atomic import atomic_path

log = logging.getLogger(__name__)

# Keep exported logits and logs finite: sigmoid(+-16.6) is 1 - 6e-8 / 6e-8, below what a float32
# opacity resolves next to 1, and 1e-30 m is far below any meaningful scale.
_OPACITY_EPS = 6e-8
_MIN_SCALE = 1e-30
_QUAT_EPS = 1e-12


class PlyFormatError(ValueError):
    """A PLY file is unreadable or is not a 3D Gaussian Splatting file."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


def _property_names(sh_coeffs: int) -> list[str]:
    """INRIA vertex property names, in file order, for K = sh_coeffs SH coefficients per channel."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (sh_coeffs - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64, copy=False)


def _normalize_quats(q: np.ndarray) -> np.ndarray:
    """(N, 4) -> unit quaternions; a zero quaternion becomes the identity instead of NaN."""
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = q / np.maximum(norm, _QUAT_EPS)
    out[norm[:, 0] < _QUAT_EPS] = (1.0, 0.0, 0.0, 0.0)
    return out


def _write_atomic(path: Path, header: bytes, body: np.ndarray) -> None:
    """header + body, atomically (see savatar.core.io.atomic)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        body.tofile(fh)


def export_ply(g: WorldGaussians, path: str | Path, min_sh_degree: int = 3) -> None:
    """Write world Gaussians as an INRIA 3DGS PLY (binary little endian, float32), atomically.

    g: means (N, 3), quats (N, 4) wxyz, scales (N, 3) linear, opacities (N,) in [0, 1],
    sh (N, K, 3). Stored: opacity logit, log scales, normalized quaternion, f_rest channel-major.
    SH are zero-padded up to min_sh_degree: INRIA's loader and several viewers expect degree 3.
    Raises ValueError when a value is NaN or Inf (viewers would show garbage or crash).
    """
    path = Path(path)
    n = len(g)
    k = g.sh.shape[1]
    if sh_degree_of(k) < min_sh_degree:
        pad = g.sh.new_zeros(n, (min_sh_degree + 1) ** 2 - k, 3)
        g = WorldGaussians(g.means, g.quats, g.scales, g.opacities, torch.cat([g.sh, pad], 1))
        k = g.sh.shape[1]
    fields = {"means": g.means, "quats": g.quats, "scales": g.scales, "opacities": g.opacities, "sh": g.sh}
    for name, t in fields.items():
        if t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} rows for {n} Gaussians")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
    names = _property_names(k)
    sh = _np64(g.sh)
    opacity = np.clip(_np64(g.opacities).reshape(n), _OPACITY_EPS, 1.0 - _OPACITY_EPS)
    columns = np.concatenate([
        _np64(g.means),
        np.zeros((n, 3)),
        sh[:, 0, :],
        # (N, K-1, 3) -> (N, 3, K-1) -> flat: all R coefficients, then G, then B.
        sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),
        np.log(opacity / (1.0 - opacity))[:, None],
        np.log(np.maximum(_np64(g.scales), _MIN_SCALE)),
        _normalize_quats(_np64(g.quats)),
    ], axis=1).astype("<f4")
    assert columns.shape[1] == len(names)
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {n}\n"
              + "".join(f"property float {name}\n" for name in names)
              + "end_header\n").encode("ascii")
    # The rows of a C-contiguous (N, P) float32 array are exactly the PLY records.
    _write_atomic(path, header, np.ascontiguousarray(columns))


def _read_3dgs_arrays(path: str | Path, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The raw (file-convention) arrays of a 3DGS PLY as float64:
    xyz (N, 3), f_dc (N, 3), f_rest (N, 3(K-1)), opacity (N,) logit, scale (N, 3) log,
    rot (N, 4) wxyz unnormalized, plus each property of `optional` that is present.
    Any PLY layout plyfile reads (ascii, either endianness, any numeric types, extra
    properties in any order) is accepted."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise PlyFormatError(path, "file not found")
    try:
        # The default memory map is the fast path for binary files (plyfile's mmap=False reader
        # took ~20 s for 100K Gaussians); it still reports truncation as a parse error. Every
        # property is copied out below, so nothing keeps the map alive.
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types (PlyHeaderParseError, ValueError, ...)
        raise PlyFormatError(path, f"not a readable PLY file (truncated or corrupt?): {type(e).__name__}: {e}") from e
    if "vertex" not in ply:
        raise PlyFormatError(path, "no 'vertex' element; not a 3D Gaussian Splatting PLY")
    el = ply["vertex"]
    present = {p.name for p in el.properties}
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    for name in required:
        if name not in present:
            raise PlyFormatError(path, f"vertex property {name!r} missing; not a 3D Gaussian Splatting PLY")
    n_rest = sum(1 for p in present if p.startswith("f_rest_"))
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    for name in rest_names:
        if name not in present:
            raise PlyFormatError(path, f"vertex property {name!r} missing (found {n_rest} f_rest_* properties)")
    if n_rest % 3 or (n_rest // 3 + 1) not in (1, 4, 9, 16):
        raise PlyFormatError(path, f"{n_rest} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0..3)")

    def cols(names: list[str]) -> np.ndarray:
        return np.stack([np.asarray(el[name], dtype=np.float64) for name in names], axis=1)

    out = {
        "xyz": cols(["x", "y", "z"]),
        "f_dc": cols(["f_dc_0", "f_dc_1", "f_dc_2"]),
        "f_rest": cols(rest_names) if n_rest else np.zeros((el.count, 0)),
        "opacity": np.asarray(el["opacity"], dtype=np.float64),
        "scale": cols(["scale_0", "scale_1", "scale_2"]),
        "rot": cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
    }
    for name, arr in out.items():
        if not np.isfinite(arr).all():
            raise PlyFormatError(path, f"{name} contains NaN or Inf")
    for name in optional:
        if name in present:
            out[name] = np.array(el[name])
    return out


def _sh_from_file(f_dc: np.ndarray, f_rest: np.ndarray) -> torch.Tensor:
    """f_dc (N, 3), channel-major f_rest (N, 3(K-1)) -> sh (N, K, 3) float32."""
    n = f_dc.shape[0]
    rest = f_rest.reshape(n, 3, -1).transpose(0, 2, 1)  # (N, K-1, 3)
    return torch.from_numpy(np.concatenate([f_dc[:, None, :], rest], axis=1).astype(np.float32))


def read_ply_gaussians(path: str | Path) -> WorldGaussians:
    """Read a 3DGS PLY (ours or another 3DGS scene) into world Gaussians (float32).

    -> means (N, 3), quats (N, 4) unit wxyz, scales (N, 3) = exp(scale_*),
    opacities (N,) = sigmoid(opacity), sh (N, K, 3).
    Raises PlyFormatError naming the file and the missing property or the problem.
    """
    a = _read_3dgs_arrays(path)
    f32 = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # noqa: E731
    return WorldGaussians(
        means=f32(a["xyz"]),
        quats=f32(_normalize_quats(a["rot"])),
        scales=f32(np.exp(a["scale"])),
        opacities=torch.sigmoid(f32(a["opacity"])),
        sh=_sh_from_file(a["f_dc"], a["f_rest"]),
    )


def avatar_to_ply(avatar: GaussianAvatar, verts: torch.Tensor, path: str | Path,
                  faces: torch.Tensor | np.ndarray | None = None) -> None:
    """Deform the avatar onto posed vertices (V, 3) and export the world Gaussians as a 3DGS PLY.

    faces: (F, 3) head triangles, as for `deform` (default: the avatar's head model's).
    """
    with torch.no_grad():
        export_ply(deform(avatar, verts, faces), path)


def _vector(arr: np.ndarray, n: int, key: str, path: Path) -> np.ndarray:
    """A per-identity coefficient vector from flame_param (stored (S,) or (1, S)) padded or cut to n."""
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1)):
        raise PlyFormatError(path, f"{key!r} has shape {arr.shape}; expected (S,) or (1, S)")
    v = np.asarray(arr, dtype=np.float32).reshape(-1)
    if len(v) > n and np.abs(v[n:]).max() > 0:
        log.warning("%s: %s has %d coefficients, the head model %d; dropping the rest", path, key, len(v), n)
    return np.pad(v[:n], (0, max(0, n - len(v))))


def _model_file_sha256(flame_dir: str | Path | None) -> str | None:
    """sha256 of the FLAME model file load_flame reads (avatar files record it for FLAME)."""
    from savatar.core.head.flame import MODEL_FILES, find_flame_dir

    d = find_flame_dir(flame_dir)
    model = next((d / f for f in MODEL_FILES if (d / f).is_file()), None) if d is not None else None
    if model is None:
        return None
    h = hashlib.sha256()
    with open(model, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_gaussian_avatars(point_cloud_ply: str | Path, flame_param_npz: str | Path | None = None,
                            flame_dir: str | Path | None = None, head: HeadModelData | None = None,
                            legacy_rotation_order: bool = False) -> GaussianAvatar:
    """A GaussianAvatars result (point_cloud.ply + flame_param.npz) as a GaussianAvatar.

    point_cloud_ply: INRIA 3DGS properties plus `binding_0` (parent face index).
    flame_param_npz: the tracked FLAME parameters; default `flame_param.npz` next to the PLY.
    Only the identity is taken: `shape` (S,) and, if present, `static_offset` ((1, V', 3) or
    (V', 3)); the per-frame expression and pose are not imported.
    flame_dir: the user's FLAME directory (load_flame); head: use these head arrays instead
    (tests, or a caller that already loaded FLAME).
    legacy_rotation_order: the PLY was trained with GaussianAvatars code from before their fix of
    March 2024 (issue #23), which composed world = rot * q_face instead of q_face * rot.

    Mapping (checked against GaussianAvatars' `compute_face_orientation`, `get_xyz`,
    `get_scaling`, `get_rotation`): their face frame is ours: a0 = normalize(v1 - v0),
    a1 = normalize(a0 x (v2 - v0)), a2 = -normalize(a1 x a0), which equals normalize(a0 x a1);
    face scale (|v1 - v0| + |a2 . (v2 - v0)|) / 2; centre the centroid. xyz is the local
    position in face units (world = k R xyz + c), exp(scale_*) is relative to the face scale,
    rot_* is a wxyz quaternion in the face frame (world = q_face * rot since the fix), opacity a
    logit, features as INRIA. So every field maps one to one; the only differences are numerical
    (their normalization clamps the squared length at 1e-20, ours the length at 1e-12, which
    matters only for degenerate faces).
    Their FLAME has extra teeth faces appended after FLAME's own (add_teeth=True); Gaussians bound
    to faces the head model does not have are dropped with a warning (count in
    metadata["import_dropped"]).
    """
    path = Path(point_cloud_ply)
    a = _read_3dgs_arrays(path, optional=("binding_0",))
    if "binding_0" not in a:
        raise PlyFormatError(path, "vertex property 'binding_0' missing; not a GaussianAvatars (rigged) PLY")
    binding_f = np.asarray(a["binding_0"], dtype=np.float64)
    # GaussianAvatars writes binding_0 as float32 like every other property: exact for < 2^24.
    if not np.isfinite(binding_f).all() or (binding_f != np.round(binding_f)).any() or (binding_f < 0).any():
        raise PlyFormatError(path, "binding_0 must hold non-negative integer face indices")
    binding = binding_f.astype(np.int64)

    if head is None:
        from savatar.core.head.flame import FlameFormatError, load_flame

        try:
            head = load_flame(flame_dir)
        except FlameFormatError as e:
            raise FlameFormatError(
                e.path, "importing a GaussianAvatars result needs the FLAME model it was trained with "
                f"(pass flame_dir or set SAVATAR_FLAME_DIR): {e}") from e
        head_sha256 = _model_file_sha256(flame_dir)
    else:
        head_sha256 = None

    num_faces = len(head.faces)
    keep = binding < num_faces
    dropped = int((~keep).sum())
    if dropped == len(binding):
        raise PlyFormatError(path, f"every binding_0 is >= {num_faces}, the face count of head model {head.name!r}")
    if dropped:
        log.warning("%s: dropping %d of %d Gaussians bound to faces >= %d (not in head model %r, "
                    "e.g. GaussianAvatars' added teeth)", path, dropped, len(binding), num_faces, head.name)

    num_verts = len(head.v_template)
    shape = np.zeros(head.shapedirs.shape[2], np.float32)
    static_offset = np.zeros((num_verts, 3), np.float32)
    npz = Path(flame_param_npz) if flame_param_npz is not None else path.parent / "flame_param.npz"
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as z:
                params = {key: z[key] for key in z.files}
        except Exception as e:
            raise PlyFormatError(npz, f"not a readable .npz archive: {type(e).__name__}: {e}") from e
        if "shape" not in params:
            raise PlyFormatError(npz, "key 'shape' missing; not a GaussianAvatars flame_param.npz")
        shape = _vector(params["shape"], len(shape), "shape", npz)
        if "static_offset" in params:
            off = np.asarray(params["static_offset"], np.float32)
            if off.ndim not in (2, 3) or off.shape[-1] != 3 or (off.ndim == 3 and off.shape[0] != 1):
                raise PlyFormatError(npz, f"'static_offset' has shape {off.shape}; expected (1, V, 3) or (V, 3)")
            off = off.reshape(-1, 3)
            # Rows past the head model's vertices belong to their added teeth vertices.
            rows = min(len(off), num_verts)
            static_offset[:rows] = off[:rows]
        if not (np.isfinite(shape).all() and np.isfinite(static_offset).all()):
            raise PlyFormatError(npz, "shape or static_offset contains NaN or Inf")
    elif flame_param_npz is not None:
        raise PlyFormatError(npz, "file not found")
    else:
        log.warning("%s: no flame_param.npz next to the PLY; using the head model's mean identity", path)

    rot = _normalize_quats(a["rot"][keep])
    face = torch.from_numpy(binding[keep])
    rot_t = torch.from_numpy(rot)
    if legacy_rotation_order:
        # Old code: world = rot * q_f(t). Ours: world = q_f(t) * rot'. They agree on the identity
        # mesh (shape + static offset, zero pose and expression) for rot' = q_f^-1 * rot * q_f;
        # on other poses the two conventions differ and cannot be matched exactly.
        model = HeadModel(head)
        with torch.no_grad():
            verts = model(shape=torch.from_numpy(shape)[None], static_offset=torch.from_numpy(static_offset)).vertices[0]
        R, _, _ = face_frames(verts.double(), torch.as_tensor(head.faces))
        qf = matrix_to_quat(R)[face]
        qf_inv = qf * qf.new_tensor([1.0, -1.0, -1.0, -1.0])
        rot_t = quat_multiply(quat_multiply(qf_inv, rot_t), qf)

    f32 = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)  # noqa: E731
    metadata: dict = {"head_data": head, "num_faces": num_faces, "import_dropped": dropped,
                      "imported_from": str(path)}
    if head_sha256 is not None:
        metadata["head_file_sha256"] = head_sha256
    return GaussianAvatar(
        face=face,
        mean=f32(a["xyz"][keep]),
        rot=f32(rot_t),
        log_scale=f32(a["scale"][keep]),
        opacity_logit=f32(a["opacity"][keep]),
        sh=_sh_from_file(a["f_dc"][keep], a["f_rest"][keep]),
        head_model=head.name,
        shape=f32(shape),
        static_offset=f32(static_offset),
        default_expr=torch.zeros(head.exprdirs.shape[2]),
        metadata=metadata,
    )
