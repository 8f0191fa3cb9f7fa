"""Avatar file round trip, validation of damaged files and atomic saves
(savatar.core.io.avatar_file)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from savatar.core.gaussians.binding import init_avatar
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.head.open_head import load_open_head_data
from savatar.core.io import avatar_file
from savatar.core.io.avatar_file import AvatarFormatError, load_avatar, save_avatar

TENSORS = ("face", "mean", "rot", "log_scale", "opacity_logit", "sh", "shape", "static_offset", "default_expr")


@pytest.fixture(scope="module")
def avatar() -> GaussianAvatar:
    av = init_avatar(load_open_head_data(), 3000, seed=5, sh_degree=1)
    g = torch.Generator().manual_seed(0)
    # Non-trivial values everywhere so a bit-exact round trip means something.
    av.sh = av.sh + torch.randn(av.sh.shape, generator=g) * 0.1
    av.rot = torch.nn.functional.normalize(av.rot + torch.randn(av.rot.shape, generator=g) * 0.1, dim=-1)
    av.shape = torch.randn(av.shape.shape, generator=g)
    av.static_offset = torch.randn(av.static_offset.shape, generator=g) * 1e-3
    av.default_expr = torch.randn(av.default_expr.shape, generator=g)
    av.metadata = {
        "thumbnails": np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        "refinement": {"iterations": 100, "losses": np.linspace(1, 0.1, 10, dtype=np.float32),
                       "resume": {"sampler": {"order": [2, 0]},
                                  "optimizer": {"mean": {"step": 100, "exp_avg": av.mean.numpy() * 0.01,
                                                         "exp_avg_sq": av.mean.numpy() ** 2}},
                                  "frame": {}}},
        "motions": {"talk": {"fps": 25.0, "expr": np.zeros((4, av.default_expr.shape[0]), np.float32),
                             "pose": np.zeros((4, 15), np.float32), "translation": np.zeros((4, 3), np.float32)}},
    }
    return av


@pytest.fixture(scope="module")
def saved(avatar: GaussianAvatar, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("avatar") / "good.h5"
    save_avatar(avatar, path)
    return path


def test_round_trip_bit_exact(avatar: GaussianAvatar, saved: Path) -> None:
    loaded = load_avatar(saved)
    for name in TENSORS:
        assert torch.equal(getattr(loaded, name), getattr(avatar, name)), name
    assert loaded.head_model == "open-head"
    head, ref = loaded.metadata["head_data"], load_open_head_data()
    for name in ("v_template", "faces", "shapedirs", "exprdirs", "lbs_weights", "lmk_bary", "vertex_colors"):
        assert np.array_equal(getattr(head, name), getattr(ref, name)), name
    assert head.expr_names == ref.expr_names and head.shape_names == ref.shape_names
    assert set(head.vertex_regions) == set(ref.vertex_regions)
    meta = loaded.metadata
    assert np.array_equal(meta["thumbnails"], avatar.metadata["thumbnails"])
    assert meta["refinement"]["iterations"] == 100
    adam = meta["refinement"]["resume"]["optimizer"]["mean"]
    assert adam["step"] == 100 and np.array_equal(adam["exp_avg_sq"], avatar.mean.numpy() ** 2)
    assert meta["refinement"]["resume"]["sampler"] == {"order": [2, 0]}
    assert np.array_equal(meta["motions"]["talk"]["pose"], avatar.metadata["motions"]["talk"]["pose"])
    assert meta["created"]
    with h5py.File(saved) as f:
        assert f["gaussians/face"].dtype == np.int32 and f["gaussians/mean"].dtype == np.float32
        assert f["gaussians/sh"].attrs["units"] and f["gaussians/rot"].attrs["convention"]
        assert f["head/shapedirs"].compression == "gzip"
    # A loaded avatar saves again without extra arguments and stays identical.
    again = saved.parent / "again.h5"
    save_avatar(loaded, again)
    reloaded = load_avatar(again)
    for name in TENSORS:
        assert torch.equal(getattr(reloaded, name), getattr(avatar, name)), name


def test_flame_avatar_stores_only_a_hash(avatar: GaussianAvatar, tmp_path: Path) -> None:
    model_file = tmp_path / "generic_model.pkl"
    model_file.write_bytes(b"licensed bytes")
    av = GaussianAvatar(**{n: getattr(avatar, n) for n in TENSORS}, head_model="flame")
    path = tmp_path / "flame.h5"
    save_avatar(av, path, head=load_open_head_data(), head_file=model_file)
    with h5py.File(path) as f:
        assert "v_template" not in f["head"] and len(f["head"].attrs["file_sha256"]) == 64
    loaded = load_avatar(path)
    assert loaded.head_model == "flame" and torch.equal(loaded.mean, avatar.mean)


def _corrupt(saved: Path, tmp_path: Path, edit: Callable[[h5py.File], None]) -> Path:
    path = tmp_path / "bad.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _replace(name: str, value: np.ndarray) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, data=value)
    return edit


def _with_nan(f: h5py.File) -> None:
    mean = f["gaussians/mean"][()]
    mean[7, 1] = np.nan
    _replace("gaussians/mean", mean)(f)


def _face_out_of_range(f: h5py.File) -> None:
    face = f["gaussians/face"][()]
    face[3] = len(f["head/faces"])
    _replace("gaussians/face", face)(f)


CORRUPTIONS: dict[str, tuple[Callable[[h5py.File], None], str]] = {
    "format": (lambda f: f.attrs.__setitem__("format", "something-else"), "format"),
    "version": (lambda f: f.attrs.__setitem__("version", 99), "version"),
    "missing_rot": (lambda f: f.__delitem__("gaussians/rot"), "/gaussians/rot"),
    "rot_shape": (lambda f: _replace("gaussians/rot", np.zeros((len(f["gaussians/face"]), 3), np.float32))(f),
                  "/gaussians/rot"),
    "mean_int": (lambda f: _replace("gaussians/mean", f["gaussians/mean"][()].astype(np.int64))(f),
                 "/gaussians/mean"),
    "nan_mean": (_with_nan, "/gaussians/mean"),
    "face_range": (_face_out_of_range, "/gaussians/face"),
    "count_mismatch": (lambda f: _replace("gaussians/opacity_logit", f["gaussians/opacity_logit"][:-1])(f),
                       "/gaussians/opacity_logit"),
    "sh_k": (lambda f: _replace("gaussians/sh", np.zeros((len(f["gaussians/face"]), 5, 3), np.float32))(f),
             "/gaussians/sh"),
    "missing_head": (lambda f: f.__delitem__("head"), "/head"),
    "adam_shape": (lambda f: _replace("metadata/refinement/resume/optimizer/mean/exp_avg", np.zeros((5, 3), np.float32))(f),
                   "/metadata/refinement/resume/optimizer/mean/exp_avg"),
    "adam_unknown": (lambda f: f.move("metadata/refinement/resume/optimizer/mean", "metadata/refinement/resume/optimizer/face"),
                     "/metadata/refinement/resume/optimizer/face"),
    "sampler_json": (lambda f: f["metadata/refinement/resume"].attrs.__setitem__("sampler", "{not json"),
                     "/metadata/refinement/resume"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_file_names_in_file_path(case: str, saved: Path, tmp_path: Path) -> None:
    edit, where = CORRUPTIONS[case]
    path = _corrupt(saved, tmp_path, edit)
    with pytest.raises(AvatarFormatError) as info:
        load_avatar(path)
    assert where in str(info.value)


def test_truncated_and_foreign_files(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    cases = {"truncated.h5": data[: len(data) // 2], "random.h5": np.random.default_rng(1).bytes(4096),
             "text.h5": b"just some text\n" * 20, "empty.h5": b""}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(AvatarFormatError) as info:
            load_avatar(path)
        assert str(path) in str(info.value), name


def test_interrupted_save_keeps_previous_file(avatar: GaussianAvatar, saved: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "avatar.h5"
    path.write_bytes(saved.read_bytes())
    before = path.read_bytes()
    original = h5py.Group.create_dataset

    def failing(self: h5py.Group, name: str, *args, **kwargs):
        if name == "sh":
            raise RuntimeError("disk full (simulated)")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        save_avatar(avatar, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar.h5"]
    assert avatar_file.FORMAT == "savatar-avatar"


def test_mediapipe_landmark_map_survives_the_file(tmp_path):
    """The tracker needs it: an avatar opened from a file must be trackable like the bundled one."""
    from savatar.core.drive.tracking import mediapipe_indices
    from savatar.core.gaussians.binding import init_avatar
    from savatar.core.head.open_head import load_open_head_data

    data = load_open_head_data()
    save_avatar(init_avatar(data, 200), tmp_path / "a.h5", head=data)
    loaded = load_avatar(tmp_path / "a.h5").metadata["head_data"]
    assert np.array_equal(mediapipe_indices(loaded), np.arange(478))
