"""Load the user's licensed FLAME files into `HeadModelData` (docs/conventions.md, "FLAME files").

FLAME is licensed, so we never ship or download it: the user points us at the directory holding
FLAME 2020 `generic_model.pkl` or FLAME 2023 `flame2023.pkl` (argument or `SAVATAR_FLAME_DIR`).
Those files are Python 2 pickles in which some arrays are chumpy `Ch` objects. chumpy breaks on
modern numpy, and a pickle can run arbitrary code, so we read them with a restricted Unpickler:
numpy arrays and scipy.sparse matrices are rebuilt by their own classes, chumpy classes become
inert stubs that only record their pickled state, and every other global is refused.
"""
from __future__ import annotations

import importlib
import io
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from savatar.core.head.head_model import NUM_JOINTS, HeadModelData

log = logging.getLogger(__name__)

ENV_VAR = "SAVATAR_FLAME_DIR"
# Preference order: the newer model first when both are present.
MODEL_FILES = ("flame2023.pkl", "generic_model.pkl")
# MediaPipe first because our tracker fits MediaPipe landmarks; the 68-point sets are fallbacks.
EMBEDDING_FILES = ("mediapipe_landmark_embedding.npz", "landmark_embedding.npy", "flame_static_embedding.pkl")
FLAME_SHAPE_BLOCK = 300  # FLAME stores 300 identity components before the expression components
POSE_FEATURES = 9 * (NUM_JOINTS - 1)  # (R_j - I) of the 4 non-root joints
SKIN_RGB = (0.80, 0.63, 0.54)


class FlameFormatError(ValueError):
    """A FLAME or landmark-embedding file is missing, unreadable or not shaped as expected."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)


def find_flame_dir(flame_dir: str | Path | None = None) -> Path | None:
    """The explicit directory if given, else `$SAVATAR_FLAME_DIR` if set and non-empty, else None."""
    if flame_dir is not None and str(flame_dir) != "":
        return Path(flame_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


class _InertObject:
    """Stands in for a class from a module we must not import (chumpy, torch).

    It works for every way a pickle can build an object (REDUCE calls the class, NEWOBJ calls
    `__new__`, `copyreg._reconstructor` uses `object.__new__`, BUILD calls `__setstate__`) and
    only records the arguments and state; no code from the original module ever runs.
    """

    _origin = "?"
    _pickled_args: tuple = ()
    _pickled_state: dict | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "_InertObject":
        obj = super().__new__(cls)
        obj._pickled_args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        merged: dict = {}
        # Objects with __slots__ pickle (dict_state, slot_state); plain ones pickle a dict.
        parts = state if isinstance(state, tuple) else (state,)
        for part in parts:
            if isinstance(part, dict):
                merged.update(part)
            elif part is not None and "x" not in merged:
                merged["x"] = part
        self._pickled_state = merged

    def __repr__(self) -> str:
        return f"<inert {self._origin}>"

    def underlying(self) -> Any:
        """The wrapped array of a chumpy `Ch` (its state's 'x', else its first argument), or None.

        Derived chumpy expressions (ch_ops, reordering) store operands instead of a value; they
        cannot be evaluated without chumpy and yield None.
        """
        state = self._pickled_state or {}
        if "x" in state:
            return state["x"]
        if self._pickled_args and not isinstance(self._pickled_args[0], (str, bytes)):
            return self._pickled_args[0]
        return None


_INERT_CLASSES: dict[str, type[_InertObject]] = {}


def _inert_class(module: str, name: str) -> type[_InertObject]:
    # One subclass per original class so stubs report where they came from.
    origin = f"{module}.{name}"
    if origin not in _INERT_CLASSES:
        _INERT_CLASSES[origin] = type(name, (_InertObject,), {"_origin": origin})
    return _INERT_CLASSES[origin]


def _numpy_attr(submodule: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; old pickles name numpy.core, new ones numpy._core.
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"numpy has no {submodule}.{name}")


_NUMPY_CORE_GLOBALS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_SPARSE_CLASSES = {
    f"{fmt}_{kind}" for fmt in ("csc", "csr", "coo", "bsr", "dia", "lil", "dok") for kind in ("matrix", "array")
}
# Pure data constructors only: nothing here can reach the file system or run code.
_SAFE_BUILTINS = {"object", "set", "frozenset", "slice", "complex", "bytes", "bytearray", "list", "dict", "tuple"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.IOBase, path: Path, inert_prefixes: tuple[str, ...]):
        super().__init__(file, encoding="latin1")  # Python 2 str holds raw array bytes
        self.path = path
        self.inert_prefixes = inert_prefixes

    def find_class(self, module: str, name: str) -> Any:
        if any(module == p or module.startswith(p + ".") for p in self.inert_prefixes):
            return _inert_class(module, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        for base in ("numpy.core.", "numpy._core."):
            if module.startswith(base) and (module[len(base):], name) in _NUMPY_CORE_GLOBALS:
                return _numpy_attr(module[len(base):], name)
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_CLASSES:
            # Resolve by class name: old pickles name scipy.sparse.csc, which newer scipy removes.
            return getattr(scipy.sparse, name)
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"), ("_codecs", "encode")):
            return super().find_class(module, name)
        if (module, name) == ("collections", "OrderedDict"):
            return super().find_class(module, name)
        raise FlameFormatError(
            self.path,
            f"refusing to load the global {module}.{name}: expected only numpy arrays, scipy.sparse "
            f"matrices and {', '.join(p + '.*' for p in self.inert_prefixes)} objects",
        )


def _restricted_load(path: Path, data: bytes | None = None, inert_prefixes: tuple[str, ...] = ("chumpy",)) -> Any:
    """Unpickle `path` (or `data` read from it) with the restricted Unpickler; errors name the file."""
    try:
        if data is not None:
            return _RestrictedUnpickler(io.BytesIO(data), path, inert_prefixes).load()
        # Stream from the file: a FLAME pickle is 50-100 MB, no need to hold it twice.
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, path, inert_prefixes).load()
    except FlameFormatError:
        raise
    except FileNotFoundError as e:
        raise FlameFormatError(path, "file not found") from e
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted pickle is a format error
        raise FlameFormatError(path, f"not a readable pickle ({type(e).__name__}: {e})") from e


def _sparse_to_dense(m: Any) -> np.ndarray:
    try:
        return np.asarray(m.toarray())
    except Exception:  # noqa: BLE001 - fall back to the raw CSC/CSR fields of an old scipy pickle
        d = vars(m)
        shape = d.get("_shape", d.get("shape"))
        cls = scipy.sparse.csr_matrix if "csr" in type(m).__name__ else scipy.sparse.csc_matrix
        return np.asarray(cls((d["data"], d["indices"], d["indptr"]), shape=shape).toarray())


def _to_numpy(value: Any, depth: int = 0) -> np.ndarray | None:
    """Plain numpy view of an unpickled value; None when there is no array behind it."""
    if depth > 8:
        return None
    if isinstance(value, _InertObject):
        return _to_numpy(value.underlying(), depth + 1)
    if scipy.sparse.issparse(value):
        return _sparse_to_dense(value)
    if isinstance(value, np.ndarray):
        return None if value.dtype == object else value
    if isinstance(value, (bool, int, float, complex, np.generic, str, list, tuple)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            return None
        return None if arr.dtype == object else arr
    return None


def load_flame_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read an official FLAME pickle (2020 `generic_model.pkl`, 2023 `flame2023.pkl`) without chumpy.

    Returns every entry that holds an array as plain numpy (chumpy `Ch` unwrapped, sparse made
    dense): v_template (5023, 3), f (9976, 3), shapedirs (5023, 3, 400), posedirs (5023, 3, 36),
    J_regressor (5, 5023), kintree_table (2, 5), weights (5023, 5), plus extras such as J and
    bs_style. Entries with no array behind them are dropped with a log message.
    """
    path = Path(path)
    obj = _restricted_load(path)
    if not isinstance(obj, dict):
        raise FlameFormatError(path, f"expected a pickled dict of FLAME arrays, found {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        arr = _to_numpy(value)
        if arr is None:
            log.info("%s: skipping %r (%r holds no array we can read without chumpy)", path, key, value)
            continue
        out[str(key)] = arr
    return out


# ---------------------------------------------------------------------------------------------
# FLAME arrays -> HeadModelData


def _get(arrays: dict[str, Any], key: str, source: Any, expected: str) -> np.ndarray:
    if key not in arrays:
        raise FlameFormatError(source, f"missing key {key!r}; expected {expected}")
    arr = _to_numpy(arrays[key])
    if arr is None or arr.dtype.kind not in "biuf":
        raise FlameFormatError(source, f"key {key!r} holds no numeric array; expected {expected}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise FlameFormatError(source, f"key {key!r} contains NaN or Inf; expected finite {expected}")
    return arr


def _check_shape(arr: np.ndarray, key: str, shape: tuple[int | None, ...], source: Any) -> None:
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise FlameFormatError(source, f"key {key!r} has shape {arr.shape}; expected {want}")


def flame_to_head_data(
    arrays: dict[str, Any],
    num_shape: int = 300,
    num_expr: int = 100,
    name: str = "flame",
    *,
    shape_block: int = FLAME_SHAPE_BLOCK,
    landmarks: LandmarkEmbedding | None = None,
    source: str | Path | None = None,
) -> HeadModelData:
    """Turn FLAME arrays (as from `load_flame_pickle`) into `HeadModelData`.

    V vertices, F faces, K = shapedirs components. The first `shape_block` components of
    shapedirs (V, 3, K) are identity (300 in FLAME); we keep the first `num_shape` of them and up
    to `num_expr` of the expression components after the block (FLAME 2023 may hold more or
    fewer than 100). posedirs may be (V, 3, 36) or (V * 3, 36). The model need not have FLAME's
    vertex count, but it must have its 5 joints. `source` names the file in error messages.
    """
    source = source if source is not None else "<FLAME arrays>"
    v_template = _get(arrays, "v_template", source, "(V, 3) float")
    _check_shape(v_template, "v_template", (None, 3), source)
    v = v_template.shape[0]

    faces = _get(arrays, "f", source, "(F, 3) vertex indices")
    _check_shape(faces, "f", (None, 3), source)
    if faces.dtype.kind not in "iu" or (faces.size and (faces.min() < 0 or faces.max() >= v)):
        raise FlameFormatError(source, f"key 'f' must hold integer vertex indices in 0..{v - 1}")

    if not 0 < num_shape <= shape_block or num_expr < 0:
        raise ValueError(f"need 0 < num_shape <= {shape_block} and num_expr >= 0, got {num_shape}, {num_expr}")
    shapedirs = _get(arrays, "shapedirs", source, f"({v}, 3, K) with K > {shape_block}")
    _check_shape(shapedirs, "shapedirs", (v, 3, None), source)
    k = shapedirs.shape[2]
    if k <= shape_block:
        raise FlameFormatError(
            source, f"key 'shapedirs' has {k} components; expected {shape_block} shape plus expression components"
        )

    posedirs = _get(arrays, "posedirs", source, f"({v}, 3, {POSE_FEATURES})")
    if posedirs.shape == (v * 3, POSE_FEATURES):
        posedirs = posedirs.reshape(v, 3, POSE_FEATURES)
    _check_shape(posedirs, "posedirs", (v, 3, POSE_FEATURES), source)

    j_regressor = _get(arrays, "J_regressor", source, f"({NUM_JOINTS}, {v})")
    _check_shape(j_regressor, "J_regressor", (NUM_JOINTS, v), source)

    weights = _get(arrays, "weights", source, f"({v}, {NUM_JOINTS}) skinning weights")
    _check_shape(weights, "weights", (v, NUM_JOINTS), source)
    if (weights < -1e-6).any() or not np.allclose(weights.sum(1), 1.0, atol=1e-3):
        raise FlameFormatError(source, "key 'weights' must be non-negative with rows summing to 1")

    kintree = _get(arrays, "kintree_table", source, f"(2, {NUM_JOINTS}) [parent; joint] table")
    _check_shape(kintree, "kintree_table", (2, NUM_JOINTS), source)
    if not np.array_equal(kintree[1], np.arange(NUM_JOINTS)):
        raise FlameFormatError(
            source, f"key 'kintree_table' row 1 is {kintree[1]}; expected joints 0..{NUM_JOINTS - 1}"
        )
    # The root's parent is stored as uint32 max (or -1 after a signed cast): normalise it to -1.
    parents = kintree[0].astype(np.int64)
    parents[0] = -1
    # HeadModel chains transforms in joint order, so every parent must come before its child.
    if any(not 0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise FlameFormatError(
            source, f"key 'kintree_table' has parents {kintree[0]}; expected each parent before its child"
        )

    if landmarks is None:
        landmarks = LandmarkEmbedding(np.zeros(0, np.int64), np.zeros((0, 3), np.float32), None)
    if len(landmarks.faces) and landmarks.faces.max() >= len(faces):
        raise FlameFormatError(
            landmarks.source or source,
            f"landmark face index {int(landmarks.faces.max())} outside the model's {len(faces)} faces",
        )

    shape = shapedirs[:, :, :num_shape]
    expr = shapedirs[:, :, shape_block : shape_block + num_expr]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    data = HeadModelData(
        name=name,
        v_template=f32(v_template),
        faces=np.ascontiguousarray(faces, dtype=np.int64),
        shapedirs=f32(shape),
        exprdirs=f32(expr),
        posedirs=f32(posedirs),
        j_regressor=f32(j_regressor),
        parents=parents,
        lbs_weights=f32(weights),
        lmk_faces=np.ascontiguousarray(landmarks.faces, dtype=np.int64),
        lmk_bary=f32(landmarks.bary),
        lmk_mediapipe=None if landmarks.mediapipe_indices is None else np.asarray(landmarks.mediapipe_indices, np.int64),
        vertex_colors=np.tile(np.asarray(SKIN_RGB, np.float32), (v, 1)),
        shape_names=[f"shape{i:03d}" for i in range(shape.shape[2])],
        expr_names=[f"expr{i:03d}" for i in range(expr.shape[2])],
    )
    try:
        data.validate()
    except ValueError as e:
        raise FlameFormatError(source, str(e)) from e
    return data


# ---------------------------------------------------------------------------------------------
# Landmark embeddings


@dataclass
class LandmarkEmbedding:
    """L landmarks on the mesh surface.

    faces: (L,) int64 triangle index per landmark
    bary: (L, 3) float32 barycentric coordinates in that triangle
    mediapipe_indices: (L,) int64 MediaPipe Face Mesh index of each landmark, or None (68-point sets)
    source: the file it came from
    """

    faces: np.ndarray
    bary: np.ndarray
    mediapipe_indices: np.ndarray | None = None
    source: Path | None = None


def _read_npy_pickle(path: Path) -> Any:
    # np.load(allow_pickle=True) would run any global in the file; DECA's landmark_embedding.npy
    # even holds torch tensors whose unpickling calls torch.load. Parse the .npy header ourselves
    # and feed the pickled payload to the restricted Unpickler with torch made inert.
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise FlameFormatError(path, f".npy format version {version} not supported; expected 1.0 or 2.0")
            payload = fh.read()
    except FlameFormatError:
        raise
    except FileNotFoundError as e:
        raise FlameFormatError(path, "file not found") from e
    except Exception as e:  # noqa: BLE001 - a corrupt header is a format error
        raise FlameFormatError(path, f"not a readable .npy file ({type(e).__name__}: {e})") from e
    if dtype != object:
        raise FlameFormatError(path, f"holds a plain {dtype} array; expected a pickled dict of landmark arrays")
    obj = _restricted_load(path, payload, inert_prefixes=("chumpy", "torch"))
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.item()
    return obj


def _embedding_arrays(path: Path, obj: Any, faces_key: str, bary_key: str) -> tuple[np.ndarray, np.ndarray]:
    expected = f"{faces_key!r} (L,) face indices and {bary_key!r} (L, 3) barycentric coordinates"
    faces = _to_numpy(obj.get(faces_key))
    bary = _to_numpy(obj.get(bary_key))
    if faces is None or bary is None:
        raise FlameFormatError(path, f"missing landmark arrays; expected {expected}")
    # DECA stores its 68-point set with a leading batch axis: (1, 68) and (1, 68, 3).
    faces = faces.reshape(-1)
    bary = bary.reshape(-1, 3) if bary.size % 3 == 0 else bary
    if faces.dtype.kind not in "iu" or bary.dtype.kind != "f" or bary.ndim != 2 or len(bary) != len(faces):
        raise FlameFormatError(
            path, f"landmark arrays have {faces.dtype} {faces.shape} and {bary.dtype} {bary.shape}; expected {expected}"
        )
    if (faces < 0).any() or not np.isfinite(bary).all() or not np.allclose(bary.sum(1), 1.0, atol=1e-3):
        raise FlameFormatError(path, "landmark face indices must be >= 0 and barycentric rows finite, summing to 1")
    return faces.astype(np.int64), bary.astype(np.float32)


def load_landmark_embedding(path: str | Path) -> LandmarkEmbedding:
    """Read a FLAME landmark embedding. Supported, recognised by their keys:

    - `mediapipe_landmark_embedding.npz` (FLAME trackers): lmk_face_idx (105,), lmk_b_coords
      (105, 3), landmark_indices (105,) = the MediaPipe Face Mesh index of each landmark;
    - DECA `landmark_embedding.npy` (pickled dict): full_lmk_faces_idx (1, 68) and
      full_lmk_bary_coords (1, 68, 3), else the static 51-point static_lmk_* arrays;
    - `flame_static_embedding.pkl` (Python 2 pickle): lmk_face_idx (51,), lmk_b_coords (51, 3).
    """
    path = Path(path)
    if not path.is_file():
        raise FlameFormatError(path, "landmark embedding file not found")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                obj: Any = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise FlameFormatError(path, f"not a readable .npz archive ({type(e).__name__}: {e})") from e
    elif path.suffix == ".npy":
        obj = _read_npy_pickle(path)
    else:
        obj = _restricted_load(path, inert_prefixes=("chumpy", "torch"))
    if not isinstance(obj, dict):
        raise FlameFormatError(path, f"found {type(obj).__name__}; expected a dict of landmark arrays")

    mediapipe = None
    if "lmk_face_idx" in obj:
        faces, bary = _embedding_arrays(path, obj, "lmk_face_idx", "lmk_b_coords")
        if "landmark_indices" in obj:
            mediapipe = _to_numpy(obj["landmark_indices"])
            if mediapipe is None or mediapipe.dtype.kind not in "iu" or mediapipe.reshape(-1).shape != faces.shape:
                raise FlameFormatError(path, f"'landmark_indices' must be ({len(faces)},) MediaPipe indices")
            mediapipe = mediapipe.reshape(-1).astype(np.int64)
    elif "full_lmk_faces_idx" in obj:
        faces, bary = _embedding_arrays(path, obj, "full_lmk_faces_idx", "full_lmk_bary_coords")
    elif "static_lmk_faces_idx" in obj:
        faces, bary = _embedding_arrays(path, obj, "static_lmk_faces_idx", "static_lmk_bary_coords")
    else:
        raise FlameFormatError(
            path,
            f"keys {sorted(map(str, obj))}; expected lmk_face_idx/lmk_b_coords (MediaPipe or static "
            "embedding) or full_lmk_faces_idx/full_lmk_bary_coords (DECA landmark_embedding.npy)",
        )
    return LandmarkEmbedding(faces, bary, mediapipe, path)


# ---------------------------------------------------------------------------------------------
# Directory loading


def _resolve_dir(flame_dir: str | Path | None) -> Path:
    d = find_flame_dir(flame_dir)
    if d is None:
        raise FlameFormatError(None, f"no FLAME directory: pass one or set {ENV_VAR}")
    if not d.is_dir():
        raise FlameFormatError(d, "FLAME directory not found")
    return d


def find_landmark_embedding(flame_dir: str | Path | None = None) -> LandmarkEmbedding | None:
    """The first embedding of EMBEDDING_FILES present in the FLAME directory, or None."""
    d = _resolve_dir(flame_dir)
    for fname in EMBEDDING_FILES:
        if (d / fname).is_file():
            return load_landmark_embedding(d / fname)
    return None


def load_flame(flame_dir: str | Path | None = None, num_shape: int = 300, num_expr: int = 100) -> HeadModelData:
    """Load FLAME (2023 preferred over 2020) and its landmark embedding from the FLAME directory.

    The directory is `flame_dir`, else `$SAVATAR_FLAME_DIR`. Without an embedding file the model
    has no landmarks (L = 0). The MediaPipe index of each landmark is not part of HeadModelData:
    get it from `find_landmark_embedding`.
    """
    d = _resolve_dir(flame_dir)
    model = next((d / f for f in MODEL_FILES if (d / f).is_file()), None)
    if model is None:
        raise FlameFormatError(
            None,
            f"no FLAME model in {d}: expected generic_model.pkl (FLAME 2020) or flame2023.pkl (FLAME 2023); "
            "FLAME is licensed, download it from the FLAME website yourself",
        )
    landmarks = find_landmark_embedding(d)
    if landmarks is None:
        log.warning("%s: no landmark embedding (%s); the FLAME model has no landmarks", d, ", ".join(EMBEDDING_FILES))
    return flame_to_head_data(
        load_flame_pickle(model), num_shape, num_expr, name="flame", landmarks=landmarks, source=model
    )
