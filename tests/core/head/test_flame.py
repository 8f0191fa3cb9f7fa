"""FLAME loading without chumpy: synthetic pickles that use chumpy's real class paths."""
from __future__ import annotations

import copyreg
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from savatar.core.head import flame
from savatar.core.head.flame import (
    FlameFormatError,
    find_flame_dir,
    flame_to_head_data,
    load_flame,
    load_flame_pickle,
    load_landmark_embedding,
)
from savatar.core.head.head_model import HeadModel

FLAME_V, FLAME_F = 5023, 9976
UINT32_MAX = 4294967295  # how FLAME's kintree_table stores the root's parent


def make_flame_arrays(v: int = 60, f: int = 100, k: int = 14, seed: int = 0) -> dict[str, np.ndarray]:
    """A random but valid FLAME-layout model: v vertices, f faces, k shapedirs components."""
    rng = np.random.default_rng(seed)
    jreg = rng.random((5, v)) * (rng.random((5, v)) < 0.2)
    jreg[:, 0] += 1e-3  # no empty row
    weights = rng.random((v, 5))
    return {
        "v_template": rng.normal(size=(v, 3)) * 0.1,
        "f": rng.integers(0, v, size=(f, 3)).astype(np.uint32),
        "shapedirs": rng.normal(size=(v, 3, k)) * 1e-3,
        "posedirs": rng.normal(size=(v, 3, 36)) * 1e-3,
        "J_regressor": jreg / jreg.sum(1, keepdims=True),
        "kintree_table": np.array([[UINT32_MAX, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "weights": weights / weights.sum(1, keepdims=True),
        "bs_style": "lbs",
    }


@pytest.fixture
def fake_chumpy():
    """Fake `chumpy` / `chumpy.ch` / `chumpy.ch_ops` modules, present only while pickling.

    `Ch` pickles like chumpy's: default protocol-2 reduce (NEWOBJ of chumpy.ch.Ch) with a state
    dict holding the array under 'x' next to chumpy's bookkeeping fields.
    """
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")
    ch_ops = types.ModuleType("chumpy.ch_ops")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                    "_make_dense": False, "_make_sparse": False}

    class SlotCh(Ch):
        """Pickles as protocol 0/1 would (copyreg._reconstructor, no constructor arguments) with
        its state as a (dict, slots) tuple, as objects with __slots__ do."""

        def __reduce__(self):
            return (copyreg._reconstructor, (SlotCh, object, None), (self.__getstate__(), None))

    class add:
        """A derived chumpy expression: operands, no value."""

        def __init__(self, a, b):
            self.a, self.b = a, b

        def __getstate__(self):
            return {"a": self.a, "b": self.b, "_dirty_vars": set()}

    for cls, mod in ((Ch, ch), (SlotCh, ch), (add, ch_ops)):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    chumpy.ch, chumpy.ch_ops = ch, ch_ops
    names = ("chumpy", "chumpy.ch", "chumpy.ch_ops")
    assert not any(n in sys.modules for n in names), "tests need a machine without chumpy"
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch, "chumpy.ch_ops": ch_ops})
    try:
        yield types.SimpleNamespace(Ch=Ch, SlotCh=SlotCh, add=add)
    finally:
        for n in names:
            sys.modules.pop(n, None)


def write_flame_pickle(path, arrays, chumpy_ns) -> None:
    """Pickle `arrays` the way the official files are laid out: shapedirs and v_template as chumpy
    Ch, posedirs as a (dict, slots)-state Ch, J_regressor as scipy csc, the rest as ndarrays.
    The fake chumpy modules are removed afterwards so the loader runs without chumpy."""
    obj = dict(arrays)
    obj["shapedirs"] = chumpy_ns.Ch(arrays["shapedirs"])
    obj["v_template"] = chumpy_ns.Ch(arrays["v_template"])
    obj["posedirs"] = chumpy_ns.SlotCh(arrays["posedirs"])
    obj["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    obj["J"] = chumpy_ns.add(chumpy_ns.Ch(np.zeros((5, 3))), chumpy_ns.Ch(np.ones((5, 3))))
    path.write_bytes(pickle.dumps(obj, protocol=2))
    for n in ("chumpy", "chumpy.ch", "chumpy.ch_ops"):
        sys.modules.pop(n, None)


@pytest.fixture
def small_pickle(tmp_path, fake_chumpy):
    arrays = make_flame_arrays()
    path = tmp_path / "generic_model.pkl"
    write_flame_pickle(path, arrays, fake_chumpy)
    return path, arrays


def test_round_trip_without_chumpy(small_pickle):
    path, arrays = small_pickle
    loaded = load_flame_pickle(path)
    assert "chumpy" not in sys.modules
    for key in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights"):
        assert type(loaded[key]) is np.ndarray, key
        np.testing.assert_array_equal(loaded[key], arrays[key], err_msg=key)
    assert "J" not in loaded  # a chumpy expression cannot be evaluated without chumpy: dropped


def test_small_model_to_head_data(small_pickle):
    path, arrays = small_pickle
    data = flame_to_head_data(load_flame_pickle(path), num_shape=10, num_expr=100, shape_block=10)
    assert data.shapedirs.shape == (60, 3, 10) and data.exprdirs.shape == (60, 3, 4)
    np.testing.assert_allclose(data.exprdirs, arrays["shapedirs"][:, :, 10:], rtol=1e-6)
    np.testing.assert_array_equal(data.parents, [-1, 0, 1, 1, 1])
    assert data.faces.dtype == np.int64 and data.expr_names == ["expr000", "expr001", "expr002", "expr003"]


def test_real_flame_shapes_forward_returns_template(tmp_path, fake_chumpy):
    arrays = make_flame_arrays(FLAME_V, FLAME_F, 400)
    arrays["posedirs"] = arrays["posedirs"].reshape(FLAME_V * 3, 36)  # the (V*3, 36) storage
    path = tmp_path / "flame2023.pkl"
    write_flame_pickle(path, arrays, fake_chumpy)
    data = flame_to_head_data(load_flame_pickle(path))
    assert data.v_template.shape == (FLAME_V, 3) and data.faces.shape == (FLAME_F, 3)
    assert data.shapedirs.shape == (FLAME_V, 3, 300) and data.exprdirs.shape == (FLAME_V, 3, 100)
    assert data.posedirs.shape == (FLAME_V, 3, 36) and data.j_regressor.shape == (5, FLAME_V)
    assert data.shape_names[0] == "shape000" and data.shape_names[-1] == "shape299"
    assert data.vertex_colors.shape == (FLAME_V, 3)
    out = HeadModel(data)()
    np.testing.assert_allclose(out.vertices[0].numpy(), arrays["v_template"], atol=1e-6)


def test_fewer_expression_components_and_truncation():
    arrays = make_flame_arrays(k=13)
    data = flame_to_head_data(arrays, num_shape=4, num_expr=2, shape_block=10)
    assert data.shapedirs.shape[2] == 4 and data.exprdirs.shape[2] == 2
    data = flame_to_head_data(arrays, num_shape=10, num_expr=100, shape_block=10)
    assert data.exprdirs.shape[2] == 3
    with pytest.raises(FlameFormatError, match="shape plus expression"):
        flame_to_head_data(make_flame_arrays(k=10), shape_block=10, num_shape=10)


def test_pose_moves_jaw_vertices(small_pickle):
    """The kintree conversion is right if rotating the jaw moves only jaw-weighted vertices."""
    path, arrays = small_pickle
    arrays = load_flame_pickle(path)
    arrays["weights"] = np.zeros_like(arrays["weights"])
    arrays["weights"][:30, 1] = 1.0  # neck
    arrays["weights"][30:, 2] = 1.0  # jaw
    arrays["posedirs"] = np.zeros_like(arrays["posedirs"])
    model = HeadModel(flame_to_head_data(arrays, num_shape=10, shape_block=10))
    pose = torch.zeros(1, 15)
    pose[0, 6] = 0.3
    verts = model(pose=pose).vertices[0].numpy()
    np.testing.assert_allclose(verts[:30], arrays["v_template"][:30], atol=1e-6)
    assert np.abs(verts[30:] - arrays["v_template"][30:]).max() > 1e-3


def test_missing_file(tmp_path):
    with pytest.raises(FlameFormatError, match="nope.pkl.*not found"):
        load_flame_pickle(tmp_path / "nope.pkl")


def test_truncated_file(small_pickle):
    path, _ = small_pickle
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FlameFormatError, match="generic_model.pkl"):
        load_flame_pickle(path)


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, eval, np.load, getattr])
def test_forbidden_global(tmp_path, func):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    arg = f"touch {marker}" if func is os.system else "1"
    path.write_bytes(pickle.dumps({"v_template": _Evil(func, arg)}, protocol=2))
    with pytest.raises(FlameFormatError, match=r"generic_model.pkl.*refusing"):
        load_flame_pickle(path)
    assert not marker.exists()


def test_not_a_dict(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(np.zeros(3), protocol=2))
    with pytest.raises(FlameFormatError, match="generic_model.pkl.*dict"):
        load_flame_pickle(path)


@pytest.mark.parametrize(
    "key, bad, pattern",
    [
        ("weights", np.full((60, 4), 0.25), r"'weights'.*\(60, 5\)"),
        ("posedirs", np.zeros((60, 3, 35)), r"'posedirs'.*\(60, 3, 36\)"),
        ("J_regressor", np.zeros((4, 60)), r"'J_regressor'.*\(5, 60\)"),
        ("kintree_table", np.array([[UINT32_MAX, 0, 3, 1, 1], [0, 1, 2, 3, 4]]), "parent before its child"),
        ("shapedirs", np.full((60, 3, 14), np.nan), "NaN"),
        ("f", np.full((100, 3), 60, np.int64), "vertex indices"),
    ],
)
def test_wrong_shape_or_value(tmp_path, fake_chumpy, key, bad, pattern):
    arrays = make_flame_arrays()
    arrays[key] = bad
    path = tmp_path / "generic_model.pkl"
    write_flame_pickle(path, arrays, fake_chumpy)
    with pytest.raises(FlameFormatError, match=r"generic_model.pkl") as exc:
        flame_to_head_data(load_flame_pickle(path), num_shape=10, shape_block=10, source=path)
    assert exc.match(pattern)


def test_missing_key(tmp_path):
    arrays = make_flame_arrays()
    del arrays["weights"]
    with pytest.raises(FlameFormatError, match=r"model.pkl: missing key 'weights'"):
        flame_to_head_data(arrays, num_shape=10, shape_block=10, source=tmp_path / "model.pkl")


# Landmark embeddings -------------------------------------------------------------------------


def _lmk(n: int, n_faces: int = 100, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bary = rng.random((n, 3))
    return rng.integers(0, n_faces, n).astype(np.uint32), bary / bary.sum(1, keepdims=True)


def test_mediapipe_embedding(tmp_path):
    faces, bary = _lmk(105)
    mp_idx = np.arange(105) * 4
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(path, lmk_face_idx=faces, lmk_b_coords=bary, landmark_indices=mp_idx)
    emb = load_landmark_embedding(path)
    np.testing.assert_array_equal(emb.faces, faces)
    np.testing.assert_allclose(emb.bary, bary, rtol=1e-6)
    np.testing.assert_array_equal(emb.mediapipe_indices, mp_idx)
    assert emb.faces.dtype == np.int64 and emb.bary.shape == (105, 3)


def test_deca_embedding_with_torch_tensors(tmp_path):
    """DECA's file holds torch tensors (dynamic contour) whose unpickling would call torch.load:
    they must stay inert while the 68-point arrays load."""
    faces, bary = _lmk(68)
    static_faces, static_bary = _lmk(51, seed=2)
    emb_dict = {
        "static_lmk_faces_idx": static_faces.astype(np.int64),
        "static_lmk_bary_coords": static_bary,
        "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long),
        "dynamic_lmk_bary_coords": torch.zeros(79, 17, 3),
        "full_lmk_faces_idx": faces.astype(np.int64)[None],
        "full_lmk_bary_coords": bary.astype(np.float32)[None],
    }
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, emb_dict, allow_pickle=True)
    emb = load_landmark_embedding(path)
    assert emb.faces.shape == (68,) and emb.mediapipe_indices is None
    np.testing.assert_array_equal(emb.faces, faces)
    np.testing.assert_allclose(emb.bary, bary, rtol=1e-6)

    del emb_dict["full_lmk_faces_idx"], emb_dict["full_lmk_bary_coords"]
    np.save(path, emb_dict, allow_pickle=True)
    np.testing.assert_array_equal(load_landmark_embedding(path).faces, static_faces)


def test_static_embedding_pickle(tmp_path):
    faces, bary = _lmk(51)
    path = tmp_path / "flame_static_embedding.pkl"
    path.write_bytes(pickle.dumps({"lmk_face_idx": faces, "lmk_b_coords": bary}, protocol=0))
    emb = load_landmark_embedding(path)
    np.testing.assert_array_equal(emb.faces, faces)
    assert emb.bary.shape == (51, 3) and emb.mediapipe_indices is None


@pytest.mark.parametrize(
    "fname, content",
    [
        ("mediapipe_landmark_embedding.npz", b"PK\x03\x04 not a zip"),
        ("landmark_embedding.npy", b"\x93NUMPY garbage"),
        ("flame_static_embedding.pkl", pickle.dumps({"lmk_face_idx": np.zeros(3, np.int64)}, protocol=2)),
        ("flame_static_embedding.pkl", pickle.dumps({"something": 1}, protocol=2)),
    ],
)
def test_corrupt_embedding(tmp_path, fname, content):
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(FlameFormatError, match=fname):
        load_landmark_embedding(path)


def test_missing_embedding(tmp_path):
    with pytest.raises(FlameFormatError, match="landmark_embedding.npy.*not found"):
        load_landmark_embedding(tmp_path / "landmark_embedding.npy")


# Directory loading ---------------------------------------------------------------------------


def test_find_flame_dir_env(tmp_path, monkeypatch):
    monkeypatch.delenv(flame.ENV_VAR, raising=False)
    assert find_flame_dir(None) is None
    monkeypatch.setenv(flame.ENV_VAR, str(tmp_path))
    assert find_flame_dir(None) == tmp_path
    assert find_flame_dir(tmp_path / "other") == tmp_path / "other"


def test_load_flame_from_env_prefers_2023(tmp_path, monkeypatch, fake_chumpy):
    a2020 = make_flame_arrays(k=310, seed=0)
    a2023 = make_flame_arrays(k=306, seed=3)
    # Both calls need the fake chumpy; write_flame_pickle removes it, so put it back in between.
    saved = {n: sys.modules.get(n) for n in ("chumpy", "chumpy.ch", "chumpy.ch_ops")}
    write_flame_pickle(tmp_path / "generic_model.pkl", a2020, fake_chumpy)
    sys.modules.update(saved)
    write_flame_pickle(tmp_path / "flame2023.pkl", a2023, fake_chumpy)
    faces, bary = _lmk(105)
    mp_ids = np.arange(105) * 4 + 1  # a subset of MediaPipe's 478, as FLAME's embedding is
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=faces, lmk_b_coords=bary,
             landmark_indices=mp_ids)
    monkeypatch.setenv(flame.ENV_VAR, str(tmp_path))
    data = load_flame()
    np.testing.assert_allclose(data.v_template, a2023["v_template"], rtol=1e-6)
    assert data.exprdirs.shape[2] == 6 and data.lmk_faces.shape == (105,)
    assert data.name == "flame"
    # The tracker maps detected MediaPipe landmarks onto FLAME's through the embedding's indices.
    from savatar.core.drive.tracking import mediapipe_indices
    assert np.array_equal(mediapipe_indices(data), mp_ids)
    out = HeadModel(data)()
    assert out.landmarks.shape == (1, 105, 3)

    (tmp_path / "flame2023.pkl").unlink()
    np.testing.assert_allclose(load_flame().v_template, a2020["v_template"], rtol=1e-6)


def test_load_flame_without_embedding(tmp_path, fake_chumpy):
    write_flame_pickle(tmp_path / "generic_model.pkl", make_flame_arrays(k=302), fake_chumpy)
    data = load_flame(tmp_path, num_shape=50, num_expr=1)
    assert data.shapedirs.shape[2] == 50 and data.exprdirs.shape[2] == 1
    from savatar.core.drive.tracking import mediapipe_indices
    with pytest.raises(ValueError, match="no MediaPipe landmark embedding"):
        mediapipe_indices(data)
    assert data.lmk_faces.shape == (0,) and data.lmk_bary.shape == (0, 3)


def test_load_flame_empty_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(flame.ENV_VAR, raising=False)
    with pytest.raises(FlameFormatError, match=r"no FLAME model in .*generic_model.pkl.*flame2023.pkl.*licensed"):
        load_flame(tmp_path)
    with pytest.raises(FlameFormatError, match=flame.ENV_VAR):
        load_flame()
    with pytest.raises(FlameFormatError, match="not found"):
        load_flame(tmp_path / "missing")


def test_landmark_outside_faces(tmp_path):
    faces, bary = _lmk(5, n_faces=1000)
    faces[0] = 500
    path = tmp_path / "flame_static_embedding.pkl"
    path.write_bytes(pickle.dumps({"lmk_face_idx": faces, "lmk_b_coords": bary}, protocol=2))
    with pytest.raises(FlameFormatError, match="flame_static_embedding.pkl.*outside"):
        flame_to_head_data(make_flame_arrays(), num_shape=10, shape_block=10,
                           landmarks=load_landmark_embedding(path))


def test_legacy_module_names(small_pickle):
    """Files written by Python 2 name numpy.core.multiarray and scipy.sparse.csc (gone in newer
    releases); GLOBAL opcodes are plain text in protocol 2, so rename them in place."""
    path, arrays = small_pickle
    data = path.read_bytes()
    assert b"numpy._core.multiarray\n" in data and b"scipy.sparse._csc\n" in data
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(data.replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n"))
    loaded = load_flame_pickle(path)
    np.testing.assert_array_equal(loaded["J_regressor"], arrays["J_regressor"])
    np.testing.assert_array_equal(loaded["shapedirs"], arrays["shapedirs"])
