"""The avatar file (.h5): one HDF5 file holding a bound Gaussian avatar and its head model.

Layout (format "savatar-avatar", version 1):
- root attrs `format`, `version`
- /head: attr `model` ("open-head" embeds the model arrays; "flame" stores only attr
  `file_sha256` of the user's licensed model file), attr `num_faces`, datasets shape,
  static_offset, default_expr
- /gaussians: face (int32), mean, rot, log_scale, opacity_logit, sh (float32), each with attrs
  `units` and `convention`
- /metadata: attr `created` (ISO 8601); optional dataset `thumbnails` (T, H, W, 3) uint8 and
  group `refinement` (attr `iterations`, dataset `losses`, optional attr `stats`: JSON object
  with the last anti-spike statistics and guard events; in an unfinished run's checkpoints a
  group `resume`: attr `sampler` (JSON: the frame-order generator's state and the frames left
  this epoch), optimizer/NAME for each optimized attribute NAME (attr `step`, datasets exp_avg
  and exp_avg_sq float32 shaped like the attribute: Adam's moments) and frame/{expr,pose}
  (T, E) / (T, 15) per-frame corrections when frames are tuned)
- /motions/NAME (optional): attr `fps`, datasets expr (T, E), pose (T, 15), translation (T, 3)
- /sources (optional; written by `savatar build`, read by `savatar refine --sources`): the
  portraits the avatar was built from, prepared for refinement, one group per portrait
  /sources/000, /sources/001, ... (read in name order), each with attr `name` (the input's
  file name) and datasets
    image (H, W, 3) uint8 RGB: a square face crop, at most 512 px a side (gzip);
    mask (H, W) uint8: 255 where the pixel counts in the refinement loss (the person
      segmentation times the head mesh's silhouette dilated a little; gzip);
    K (3, 3) float32 intrinsics in pixels of this image; viewmat (4, 4) float32 world-to-camera
      (OpenCV; the tracking camera, savatar.core.drive.tracking.TRACKING_VIEWMAT);
    expr (E,) with E the head model's expression count, pose (15,), translation (3,) float32:
      the head parameters the build fitted to this portrait (the avatar's identity: /head).
  The avatar posed with a source's parameters and rendered with its camera lines up with its
  image. Files written before this group existed load without it.

Loading checks everything and raises AvatarFormatError naming the path inside the file; saving is
atomic (temp file in the same directory, fsync, os.replace).
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.head.head_model import HeadModelData
from savatar.core.io.atomic import atomic_path

FORMAT = "savatar-avatar"
VERSION = 1

# name -> (trailing shape after N, units, convention)
_GAUSSIAN_FIELDS: dict[str, tuple[tuple[int, ...], str, str]] = {
    "face": ((), "index", "parent triangle of the head model's faces"),
    "mean": ((3,), "face scale", "position in the parent face frame [a0 | normal | a0 x normal]"),
    "rot": ((4,), "unitless", "unit quaternion w x y z in the parent face frame"),
    "log_scale": ((3,), "log face scale", "log of the standard deviations relative to the face scale"),
    "opacity_logit": ((), "logit", "opacity = sigmoid(opacity_logit)"),
    "sh": ((-1, 3), "SH coefficient", "RGB spherical harmonics, K = (degree + 1)^2, colour = C0 sh0 + 0.5 + ..."),
}
# Embedded open-head arrays; names of shape/expression components are string datasets.
_HEAD_ARRAYS = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "j_regressor", "parents",
                "lbs_weights", "lmk_faces", "lmk_bary", "vertex_colors", "lmk_mediapipe")
_HEAD_OPTIONAL = ("vertex_colors", "lmk_mediapipe")
_HEAD_FLOAT = {"v_template", "shapedirs", "exprdirs", "posedirs", "j_regressor", "lbs_weights", "lmk_bary",
               "vertex_colors"}
# Per-source float datasets of /sources/NNN and their shapes (None: the head model's expression count).
_SOURCE_PARAMS: dict[str, tuple[int | None, ...]] = {"K": (3, 3), "viewmat": (4, 4), "expr": (None,), "pose": (15,),
                                                     "translation": (3,)}
# Below this many elements compression costs more (filter overhead, chunk index) than it saves.
_COMPRESS_MIN = 4096


class AvatarFormatError(ValueError):
    """An avatar file is unreadable or inconsistent; `where` is the path inside the file."""

    def __init__(self, file: str | Path, where: str, message: str):
        self.file = str(file)
        self.where = where
        super().__init__(f"{file}: {where}: {message}")


def _put(group: h5py.Group, name: str, data: np.ndarray, compress: bool | None = None, **attrs: str) -> h5py.Dataset:
    """Dataset with attrs; compressed when compress, or by default when it is float and large."""
    data = np.ascontiguousarray(data)
    kw: dict[str, Any] = {}
    if compress is None:
        compress = data.dtype.kind == "f" and data.size >= _COMPRESS_MIN
    if compress:
        kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    ds = group.create_dataset(name, data=data, **kw)
    for key, value in attrs.items():
        ds.attrs[key] = value
    return ds


def _np(t: torch.Tensor, dtype: type) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype, copy=False)


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(f: h5py.File, avatar: GaussianAvatar, head: HeadModelData | None, head_sha256: str | None) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    g_head = f.create_group("head")
    g_head.attrs["model"] = avatar.head_model
    if avatar.head_model == "flame":
        if not head_sha256:
            raise ValueError("a FLAME avatar needs the sha256 of the user's model file: pass head_file= "
                             "or set avatar.metadata['head_file_sha256']")
        g_head.attrs["file_sha256"] = head_sha256
        if head is not None:
            g_head.attrs["num_faces"] = len(head.faces)
        elif "num_faces" in avatar.metadata:
            g_head.attrs["num_faces"] = int(avatar.metadata["num_faces"])
        else:
            raise ValueError("a FLAME avatar needs head= (or metadata['num_faces']) to record the face count")
    else:
        if head is None:
            raise ValueError(f"head model {avatar.head_model!r} must be embedded: pass head=")
        g_head.attrs["num_faces"] = len(head.faces)
        for name in _HEAD_ARRAYS:
            arr = getattr(head, name)
            if arr is not None:
                _put(g_head, name, np.asarray(arr))
        str_dt = h5py.string_dtype()
        g_head.create_dataset("shape_names", data=np.array(head.shape_names, dtype=object), dtype=str_dt)
        g_head.create_dataset("expr_names", data=np.array(head.expr_names, dtype=object), dtype=str_dt)
        g_regions = g_head.create_group("regions")
        for name, idx in head.vertex_regions.items():
            g_regions.create_dataset(name, data=np.asarray(idx, np.int64))
    _put(g_head, "shape", _np(avatar.shape, np.float32))
    _put(g_head, "static_offset", _np(avatar.static_offset, np.float32))
    _put(g_head, "default_expr", _np(avatar.default_expr, np.float32))

    g = f.create_group("gaussians")
    for name, (_, units, convention) in _GAUSSIAN_FIELDS.items():
        dtype = np.int32 if name == "face" else np.float32
        _put(g, name, _np(getattr(avatar, name), dtype), units=units, convention=convention)

    meta = avatar.metadata
    g_meta = f.create_group("metadata")
    g_meta.attrs["created"] = meta.get("created") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    if meta.get("thumbnails") is not None:
        g_meta.create_dataset("thumbnails", data=np.asarray(meta["thumbnails"], np.uint8))
    if meta.get("refinement") is not None:
        ref = meta["refinement"]
        g_ref = g_meta.create_group("refinement")
        g_ref.attrs["iterations"] = int(ref.get("iterations", 0))
        g_ref.create_dataset("losses", data=np.asarray(ref.get("losses", []), np.float32))
        if ref.get("stats") is not None:
            g_ref.attrs["stats"] = json.dumps(ref["stats"])
        if ref.get("resume"):
            _write_resume(g_ref.create_group("resume"), ref["resume"])
    if meta.get("motions"):
        g_mot = f.create_group("motions")
        for name, motion in meta["motions"].items():
            gm = g_mot.create_group(name)
            gm.attrs["fps"] = float(motion["fps"])
            for key in ("expr", "pose", "translation"):
                _put(gm, key, np.asarray(motion[key], np.float32))
    if meta.get("sources"):
        g_src = f.create_group("sources")
        for i, rec in enumerate(meta["sources"]):
            _check_source(i, rec, len(avatar.default_expr))
            gs = g_src.create_group(f"{i:03d}")
            gs.attrs["name"] = str(rec["name"])
            _put(gs, "image", rec["image"], compress=True)
            _put(gs, "mask", rec["mask"], compress=True)
            for key in _SOURCE_PARAMS:
                _put(gs, key, np.asarray(rec[key], np.float32))


def _check_source(i: int, rec: dict, num_expr: int) -> None:
    """Refuse to write a source the loader would reject (ValueError naming the source)."""
    image, mask = np.asarray(rec.get("image")), np.asarray(rec.get("mask"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"metadata['sources'][{i}]['image'] must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    if mask.dtype != np.uint8 or mask.shape != image.shape[:2]:
        raise ValueError(f"metadata['sources'][{i}]['mask'] must be (H, W) uint8 like the image, "
                         f"got {mask.dtype} {mask.shape}")
    for key, shape in _SOURCE_PARAMS.items():
        a = np.asarray(rec.get(key), np.float32)
        shape = tuple(num_expr if s is None else s for s in shape)
        if a.shape != shape or not np.isfinite(a).all():
            raise ValueError(f"metadata['sources'][{i}][{key!r}] must be finite with shape {shape}, got {a.shape}")


def save_avatar(avatar: GaussianAvatar, path: str | Path, head: HeadModelData | None = None,
                head_file: str | Path | None = None) -> None:
    """Write `avatar` to `path` atomically.

    head: the head model's arrays; embedded for the open head model (default: the bundled one,
    or avatar.metadata["head_data"] from a loaded file). For FLAME only the sha256 of the user's
    model file is stored: pass head_file (hashed here) or set avatar.metadata["head_file_sha256"].
    Optional avatar.metadata keys written: created, thumbnails, refinement, motions, sources
    (a list of {"name", "image", "mask", "K", "viewmat", "expr", "pose", "translation"}, see
    the module docstring; ValueError for one the loader would reject).
    """
    path = Path(path)
    if head is None:
        head = avatar.metadata.get("head_data")
    if head is None and avatar.head_model == "open-head":
        from savatar.core.head.open_head import load_open_head_data

        head = load_open_head_data()
    head_sha256 = _sha256(head_file) if head_file is not None else avatar.metadata.get("head_file_sha256")

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write(f, avatar, head, head_sha256)


class _Reader:
    """Checked access to datasets of one open file; every failure names the in-file path."""

    def __init__(self, f: h5py.File, file: Path):
        self.f = f
        self.file = file

    def fail(self, where: str, message: str) -> AvatarFormatError:
        return AvatarFormatError(self.file, where, message)

    def group(self, where: str) -> h5py.Group:
        obj = self.f.get(where)
        if not isinstance(obj, h5py.Group):
            raise self.fail(where, "missing group" if obj is None else "expected a group")
        return obj

    def attr(self, where: str, name: str) -> Any:
        obj = self.f[where]
        if name not in obj.attrs:
            raise self.fail(where, f"missing attribute {name!r}")
        value = obj.attrs[name]
        return value.decode() if isinstance(value, bytes) else value

    def array(self, where: str, kind: str, shape: tuple[int | None, ...]) -> np.ndarray:
        """Dataset at `where` with dtype kind "f" (float) or "i" (integer) and `shape` (None = any)."""
        obj = self.f.get(where)
        if not isinstance(obj, h5py.Dataset):
            raise self.fail(where, "missing dataset" if obj is None else "expected a dataset")
        actual = obj.dtype.kind
        if (kind == "f" and actual != "f") or (kind == "i" and actual not in "iu"):
            expected = "floating point" if kind == "f" else "integer"
            raise self.fail(where, f"expected {expected} data, found dtype {obj.dtype}")
        if len(obj.shape) != len(shape) or any(s is not None and a != s for a, s in zip(obj.shape, shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise self.fail(where, f"expected shape {want}, found {obj.shape}")
        try:
            data = obj[()]
        except OSError as e:
            raise self.fail(where, f"unreadable data ({e})") from e
        if kind == "f" and not np.isfinite(data).all():
            raise self.fail(where, "contains NaN or Inf")
        return np.asarray(data)

    def uint8(self, where: str, shape: tuple[int | None, ...]) -> np.ndarray:
        """uint8 dataset at `where` of `shape` (None = any)."""
        data = self.array(where, "i", shape)
        if self.f[where].dtype != np.uint8:
            raise self.fail(where, f"expected uint8, found {self.f[where].dtype}")
        return data

    def strings(self, where: str) -> list[str]:
        obj = self.f.get(where)
        if not isinstance(obj, h5py.Dataset) or obj.ndim != 1:
            raise self.fail(where, "expected a 1-D string dataset")
        try:
            return [s.decode() if isinstance(s, bytes) else str(s) for s in obj.asstr()[()]]
        except (TypeError, ValueError) as e:
            raise self.fail(where, f"expected strings ({e})") from e


def _read_head(r: _Reader) -> HeadModelData:
    arrays: dict[str, np.ndarray] = {}
    for name in _HEAD_ARRAYS:
        where = f"/head/{name}"
        if name in _HEAD_OPTIONAL and where not in r.f:
            continue
        ndim = {"parents": 1, "lmk_faces": 1, "lmk_mediapipe": 1, "shapedirs": 3, "exprdirs": 3, "posedirs": 3}.get(name, 2)
        arr = r.array(where, "f" if name in _HEAD_FLOAT else "i", (None,) * ndim)
        arrays[name] = arr.astype(np.float32 if name in _HEAD_FLOAT else np.int64, copy=False)
    regions = {}
    if "/head/regions" in r.f:
        for name in r.group("/head/regions"):
            regions[name] = r.array(f"/head/regions/{name}", "i", (None,)).astype(np.int64)
    data = HeadModelData(name=str(r.attr("/head", "model")), shape_names=r.strings("/head/shape_names"),
                         expr_names=r.strings("/head/expr_names"), vertex_regions=regions,
                         vertex_colors=arrays.pop("vertex_colors", None),
                         lmk_mediapipe=arrays.pop("lmk_mediapipe", None), **arrays)
    try:
        data.validate()
    except ValueError as e:
        raise r.fail("/head", f"inconsistent head model ({e})") from e
    v = len(data.v_template)
    if data.vertex_colors is not None and data.vertex_colors.shape != (v, 3):
        raise r.fail("/head/vertex_colors", f"expected shape ({v}, 3), found {data.vertex_colors.shape}")
    for name, idx in regions.items():
        if len(idx) and (idx.min() < 0 or idx.max() >= v):
            raise r.fail(f"/head/regions/{name}", f"vertex index outside 0..{v - 1}")
    return data


def load_avatar(path: str | Path) -> GaussianAvatar:
    """Read and validate an avatar file.

    The returned avatar's metadata holds: "created" (str), "head_data" (HeadModelData, for an
    embedded open head model), "head_file_sha256" (FLAME), "num_faces", and when present
    "thumbnails" ((T, H, W, 3) uint8), "refinement" ({"iterations", "losses", optionally "stats"}), "motions"
    ({name: {"fps", "expr", "pose", "translation"}}) and "sources" (a list of {"name", "image",
    "mask", "K", "viewmat", "expr", "pose", "translation"}, see the module docstring).
    Raises AvatarFormatError (a ValueError) naming the in-file path on any problem.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise AvatarFormatError(path, "/", f"not a readable HDF5 file (truncated or another format): {e}") from e
    try:
        with f:
            return _read(_Reader(f, path))
    except AvatarFormatError:
        raise
    except (OSError, KeyError, RuntimeError) as e:
        # Damage below the superblock (e.g. a truncated file) surfaces from inside h5py.
        raise AvatarFormatError(path, "/", f"unreadable HDF5 data: {e}") from e


def _read(r: _Reader) -> GaussianAvatar:
    fmt = r.attr("/", "format")
    if fmt != FORMAT:
        raise r.fail("/", f"attribute 'format' is {fmt!r}, expected {FORMAT!r}")
    version = r.attr("/", "version")
    if not isinstance(version, (int, np.integer)) or int(version) != VERSION:
        raise r.fail("/", f"attribute 'version' is {version!r}, expected {VERSION}")

    r.group("/head")
    model = str(r.attr("/head", "model"))
    meta: dict[str, Any] = {}
    if model == "flame":
        meta["head_file_sha256"] = str(r.attr("/head", "file_sha256"))
    else:
        meta["head_data"] = _read_head(r)
    num_faces = int(r.attr("/head", "num_faces"))
    if "head_data" in meta and num_faces != len(meta["head_data"].faces):
        raise r.fail("/head", f"attribute 'num_faces' is {num_faces}, the embedded model has "
                              f"{len(meta['head_data'].faces)} faces")
    meta["num_faces"] = num_faces
    shape = r.array("/head/shape", "f", (None,))
    static_offset = r.array("/head/static_offset", "f", (None, 3))
    default_expr = r.array("/head/default_expr", "f", (None,))
    head = meta.get("head_data")
    if head is not None:
        checks = (("/head/shape", len(shape), head.shapedirs.shape[2]),
                  ("/head/static_offset", len(static_offset), len(head.v_template)),
                  ("/head/default_expr", len(default_expr), head.exprdirs.shape[2]))
        for where, got, want in checks:
            if got != want:
                raise r.fail(where, f"expected length {want} to match the head model, found {got}")

    r.group("/gaussians")
    face = r.array("/gaussians/face", "i", (None,))
    n = len(face)
    g: dict[str, np.ndarray] = {}
    for name, (tail, _, _) in _GAUSSIAN_FIELDS.items():
        if name == "face":
            continue
        g[name] = r.array(f"/gaussians/{name}", "f", (n,) + tuple(None if s < 0 else s for s in tail))
    k = g["sh"].shape[1]
    if k not in (1, 4, 9, 16):
        raise r.fail("/gaussians/sh", f"expected shape (N, K, 3) with K in 1, 4, 9, 16, found K = {k}")
    if n and (face.min() < 0 or face.max() >= num_faces):
        raise r.fail("/gaussians/face", f"expected indices in 0..{num_faces - 1}, found {face.min()}..{face.max()}")

    r.group("/metadata")
    meta["created"] = str(r.attr("/metadata", "created"))
    if "/metadata/thumbnails" in r.f:
        meta["thumbnails"] = r.uint8("/metadata/thumbnails", (None, None, None, 3))
    if "/metadata/refinement" in r.f:
        r.group("/metadata/refinement")
        meta["refinement"] = {"iterations": int(r.attr("/metadata/refinement", "iterations")),
                              "losses": r.array("/metadata/refinement/losses", "f", (None,))}
        if "stats" in r.f["/metadata/refinement"].attrs:
            try:
                stats = json.loads(r.attr("/metadata/refinement", "stats"))
            except ValueError as e:
                raise r.fail("/metadata/refinement", f"attribute 'stats' is not JSON ({e})") from e
            if not isinstance(stats, dict):
                raise r.fail("/metadata/refinement", "attribute 'stats' must be a JSON object")
            meta["refinement"]["stats"] = stats
        if "/metadata/refinement/resume" in r.f:
            meta["refinement"]["resume"] = _read_resume(r, {k: v.shape for k, v in g.items()})
    if "/motions" in r.f:
        motions = {}
        for name in r.group("/motions"):
            where = f"/motions/{name}"
            r.group(where)
            expr = r.array(f"{where}/expr", "f", (None, None))
            t = len(expr)
            motions[name] = {"fps": float(r.attr(where, "fps")), "expr": expr,
                             "pose": r.array(f"{where}/pose", "f", (t, 15)),
                             "translation": r.array(f"{where}/translation", "f", (t, 3))}
        meta["motions"] = motions
    if "/sources" in r.f:
        meta["sources"] = _read_sources(r, len(default_expr))

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return GaussianAvatar(face=torch.from_numpy(face.astype(np.int64)), mean=t(g["mean"]), rot=t(g["rot"]),
                          log_scale=t(g["log_scale"]), opacity_logit=t(g["opacity_logit"]), sh=t(g["sh"]),
                          head_model=model, shape=t(shape), static_offset=t(static_offset),
                          default_expr=t(default_expr), metadata=meta)


def _write_resume(group: h5py.Group, state: dict[str, Any]) -> None:
    group.attrs["sampler"] = json.dumps(state.get("sampler") or {})
    g_opt = group.create_group("optimizer")
    for name, st in state.get("optimizer", {}).items():
        g = g_opt.create_group(name)
        g.attrs["step"] = int(st["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            _put(g, key, np.asarray(st[key], np.float32))
    g_frame = group.create_group("frame")
    for name, arr in state.get("frame", {}).items():
        _put(g_frame, name, np.asarray(arr, np.float32))


def _read_resume(r: _Reader, gaussian_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """/metadata/refinement/resume (module docstring): Adam moments shaped like their Gaussian
    attribute (or like a per-frame correction), a step count, and the sampler's JSON state."""
    where = "/metadata/refinement/resume"
    r.group(where)
    try:
        sampler = json.loads(r.attr(where, "sampler"))
    except ValueError as e:
        raise r.fail(where, f"attribute 'sampler' is not JSON ({e})") from e
    if not isinstance(sampler, dict):
        raise r.fail(where, "attribute 'sampler' must be a JSON object")
    frame = {name: r.array(f"{where}/frame/{name}", "f", (None, None)) for name in r.group(f"{where}/frame")}
    optim = {}
    for name in r.group(f"{where}/optimizer"):
        g = f"{where}/optimizer/{name}"
        r.group(g)
        if name in gaussian_shapes:
            shape = gaussian_shapes[name]
        elif name.startswith("frame_") and name[6:] in frame:
            shape = frame[name[6:]].shape
        else:
            raise r.fail(g, "not an optimized attribute (expected one of the Gaussian attributes or frame_<name>)")
        step = r.attr(g, "step")
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise r.fail(g, f"attribute 'step' is {step!r}, expected a count >= 0")
        optim[name] = {"step": int(step), **{k: r.array(f"{g}/{k}", "f", tuple(shape)) for k in ("exp_avg", "exp_avg_sq")}}
        if (optim[name]["exp_avg_sq"] < 0).any():
            raise r.fail(f"{g}/exp_avg_sq", "second moments must be >= 0")
    return {"sampler": sampler, "optimizer": optim, "frame": frame}


def _read_sources(r: _Reader, num_expr: int) -> list[dict[str, Any]]:
    """/sources: every member a complete, consistent source (module docstring), in name order."""
    g = r.group("/sources")
    if not len(g):
        raise r.fail("/sources", "expected at least one source group")
    out = []
    for name in sorted(g):
        where = f"/sources/{name}"
        r.group(where)
        image = r.uint8(f"{where}/image", (None, None, 3))
        h, w = image.shape[:2]
        if min(h, w) < 1:
            raise r.fail(f"{where}/image", f"empty image {image.shape}")
        rec: dict[str, Any] = {"name": str(r.attr(where, "name")), "image": image,
                               "mask": r.uint8(f"{where}/mask", (h, w))}
        for key, shape in _SOURCE_PARAMS.items():
            rec[key] = r.array(f"{where}/{key}", "f", tuple(num_expr if s is None else s for s in shape))
        k = rec["K"]
        if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], [0, 0, 1])):
            raise r.fail(f"{where}/K", "expected intrinsics with positive focal lengths and last row 0 0 1")
        vm = rec["viewmat"]
        if not (np.allclose(vm[3], [0, 0, 0, 1]) and np.allclose(vm[:3, :3] @ vm[:3, :3].T, np.eye(3), atol=1e-4)):
            raise r.fail(f"{where}/viewmat", "expected a rigid world-to-camera matrix (rotation, last row 0 0 0 1)")
        out.append(rec)
    return out
