"""The bundled default avatar: Gaussians on the open head model, shown when no avatar is loaded and
driven by bench puppet and the calibration of the tracker."""
from __future__ import annotations

from functools import lru_cache

from savatar.core.build.build import open_mouth_inside
from savatar.core.gaussians.binding import init_avatar
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.head.open_head import load_open_head_data


@lru_cache(maxsize=2)
def default_avatar(count: int = 30000) -> GaussianAvatar:
    """init_avatar on the bundled open head model, its mouth's inside drawn as build_avatar draws
    a closed-lipped portrait's (build.open_mouth_inside) (cached: callers must not modify it in
    place)."""
    data = load_open_head_data()
    avatar = init_avatar(data, count, bake_light=True)
    open_mouth_inside(avatar, data)
    return avatar
