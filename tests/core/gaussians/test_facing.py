"""Skipping Gaussians whose face looks away from the eye changes almost nothing on screen."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.facing import INNER_REGIONS, skippable_faces, visible_gaussians
from savatar.core.gaussians.rig import Rig
from savatar.core.render.api import render
from savatar.core.render.camera import orbit_camera

SIZE = 128


@pytest.fixture(scope="module")
def rig():
    return Rig.of(default_avatar())


@pytest.mark.parametrize("yaw, pitch, jaw", [(0, 0, 0.35), (60, 10, 0.2), (180, 0, 0.0)])
def test_skipping_faces_that_look_away_changes_little(rig, yaw, pitch, jaw):
    pose = np.zeros(15, np.float32)
    pose[6] = jaw
    verts, g = rig.pose(None, pose, None)
    cam = orbit_camera(yaw, pitch, 0.6, (0, -0.05, -0.02), SIZE, SIZE)
    keep = visible_gaussians(verts, rig.model.faces, rig.avatar.face, cam.center, skippable_faces(rig.data))
    assert 0.4 * len(g) < int(keep.sum()) < 0.85 * len(g)  # it does skip a good share
    vm, K = torch.tensor(cam.viewmat, dtype=torch.float32), torch.tensor(cam.K, dtype=torch.float32)
    full = render(g, vm, K, SIZE, SIZE, torch.ones(3), backend="cpu").rgb
    part = render(g.subset(keep), vm, K, SIZE, SIZE, torch.ones(3), backend="cpu").rgb
    diff = (full - part).abs().amax(-1)
    head = (full - 1).abs().amax(-1) > 0.02
    changed = float((diff > 0.1).float().sum() / head.sum())  # measured 0.05-0.6%, on the silhouette
    assert changed < 0.015, (yaw, pitch, jaw, changed)


def test_inner_surfaces_are_never_skipped(rig):
    skippable = skippable_faces(rig.data)
    faces = np.asarray(rig.data.faces)
    for name in INNER_REGIONS:
        ids = np.asarray(rig.data.vertex_regions[name])
        touching = np.isin(faces, ids).any(1)
        assert touching.any() and not skippable[torch.from_numpy(touching)].any(), name
    # Looking straight into the open mouth from inside the head: every cavity Gaussian is kept
    # although the eye is behind them.
    verts, _ = rig.pose()
    inner = ~skippable[rig.avatar.face]
    keep = visible_gaussians(verts, rig.model.faces, rig.avatar.face, np.array([0.0, 0.0, -0.5]), skippable)
    assert keep[inner].all()
