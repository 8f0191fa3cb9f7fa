"""An avatar with its head model, posable in one call: head parameters -> world Gaussians."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from savatar.core.gaussians.binding import deform
from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians
from savatar.core.head.head_model import HeadModel, HeadModelData


def head_data_for(avatar: GaussianAvatar, flame_dir: str | None = None) -> HeadModelData:
    """The head model an avatar is bound to: embedded in its file, the open model, or the
    user's FLAME (FlameFormatError when it is not there)."""
    data = avatar.metadata.get("head_data")
    if data is not None:
        return data
    if avatar.head_model == "open-head":
        from savatar.core.head.open_head import load_open_head_data
        return load_open_head_data()
    from savatar.core.head.flame import load_flame
    return load_flame(flame_dir)


@dataclass
class Rig:
    """avatar + head model. pose(expr (E,), pose (15,), translation (3,)) -> WorldGaussians."""

    avatar: GaussianAvatar
    model: HeadModel

    @classmethod
    def of(cls, avatar: GaussianAvatar, flame_dir: str | None = None) -> "Rig":
        data = head_data_for(avatar, flame_dir)
        if int(avatar.face.max()) >= len(data.faces):
            raise ValueError(f"avatar binds to face {int(avatar.face.max())}, the head model has {len(data.faces)}")
        return cls(avatar, HeadModel(data))

    @property
    def data(self) -> HeadModelData:
        return self.model.data

    def vertices(self, expr=None, pose=None, translation=None) -> torch.Tensor:
        """Posed mesh (V, 3) for the avatar's identity; expr defaults to the avatar's default."""
        a = self.avatar
        expr = a.default_expr if expr is None else torch.as_tensor(np.asarray(expr, np.float32))
        out = self.model(shape=a.shape[None], expr=expr[None],
                         pose=None if pose is None else torch.as_tensor(np.asarray(pose, np.float32))[None],
                         translation=None if translation is None else torch.as_tensor(np.asarray(translation, np.float32))[None],
                         static_offset=a.static_offset)
        return out.vertices[0]

    def world(self, expr=None, pose=None, translation=None) -> WorldGaussians:
        return self.pose(expr, pose, translation)[1]

    def pose(self, expr=None, pose=None, translation=None) -> tuple[torch.Tensor, WorldGaussians]:
        """(posed vertices (V, 3), world Gaussians), without gradients."""
        with torch.no_grad():
            verts = self.vertices(expr, pose, translation)
            return verts, deform(self.avatar, verts, self.model.faces)
