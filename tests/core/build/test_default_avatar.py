"""The bundled default avatar: cached, and its opened mouth shows an open mouth (teeth over a dark
inside), not the lips' colours stretched over the opening."""
from __future__ import annotations

import numpy as np
import torch

from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.binding import init_avatar
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.gaussians.rig import Rig
from savatar.core.head.open_head import load_open_head_data
from savatar.core.render.camera import orbit_camera

JAW = 0.3  # radians: wide open


def test_default_avatar_cached() -> None:
    a = default_avatar(2000)
    assert a is default_avatar(2000) and len(a) == 2000 and a.head_model == "open-head"


def _open_mouth(avatar: GaussianAvatar) -> np.ndarray:
    """(h, w, 3) in [0, 1]: the middle third of the opened mouth between the outer lips, seen from
    the front (CPU renderer). The head model's inner lips stay on the triangles that close the
    mouth, so they do not part."""
    from savatar.core.render.api import render

    rig = Rig.of(avatar)
    pose = np.zeros(15, np.float32)
    pose[6] = JAW
    verts = rig.vertices(None, pose).numpy()
    data = rig.data
    lips = (verts[np.asarray(data.faces)[data.lmk_faces]] * data.lmk_bary[:, :, None]).sum(1)[[0, 17, 61, 291]]
    camera = orbit_camera(0, 0, 0.35, tuple(verts.mean(0)), 256, 256, 30.0)
    with torch.no_grad():
        image = render(rig.world(None, pose), torch.tensor(camera.viewmat, dtype=torch.float32),
                       torch.tensor(camera.K, dtype=torch.float32), 256, 256, torch.ones(3), backend="cpu").rgb.numpy()
    cam = lips @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * np.diag(camera.K)[:2] + camera.K[:2, 2]
    (_, top), (_, bottom), (x0, _), (x1, _) = uv
    top, bottom = sorted((top, bottom))
    third = (max(x0, x1) - min(x0, x1)) / 3
    return image[int(top):int(bottom), int(min(x0, x1) + third):int(max(x0, x1) - third)]


def test_opened_mouth_shows_teeth_over_a_dark_inside():
    """Between the lips opened wide: bright teeth rows (every channel over 0.6) and dark rows (mean
    under 0.3). The head model's own colours there (the lips', on the triangles that close the
    mouth and stretch over the opening) show no teeth: a red membrane."""
    plain = init_avatar(load_open_head_data(), 30000, bake_light=True)
    for avatar, drawn in ((default_avatar(30000), True), (plain, False)):
        rows = np.median(_open_mouth(avatar), axis=1)  # (rows, 3)
        assert len(rows) > 10
        teeth = int((rows.min(1) > 0.6).sum())
        dark = int((rows.mean(1) < 0.3).sum())
        if drawn:
            assert teeth >= 2 and dark >= 3, (teeth, dark)
        else:
            assert teeth == 0, teeth
