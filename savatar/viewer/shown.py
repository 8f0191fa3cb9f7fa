"""The avatar on the stage: its rig, its file and its spike mask, and who hears when another
avatar takes its place. Main thread only: workers hand avatars over through Jobs or a LatestSlot."""
from __future__ import annotations

from typing import Callable

import numpy as np

from savatar.core.gaussians.antispike import AntiSpikeConfig, spike_mask
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.gaussians.rig import Rig

SwapListener = Callable[[Rig, "str | None"], None]


class ShownAvatar:
    """rig and path (None: not from a file, or not saved yet); spikes (N,) bool, the Gaussians
    over an anti-spike threshold; version grows with every change of the Gaussians, so the main
    loop knows to pose them again."""

    def __init__(self, rig: Rig, path: str | None, spike_cfg: AntiSpikeConfig | None = None):
        self.spike_cfg = spike_cfg or AntiSpikeConfig()
        self.version = 0
        self._listeners: list[SwapListener] = []
        self._set(rig, path)

    def on_swap(self, listener: SwapListener) -> None:
        self._listeners.append(listener)

    def show(self, rig: Rig, path: str | None) -> None:
        """Another avatar (opened, built): every listener hears of it (stage mesh, drive, info)."""
        self._set(rig, path)
        for listener in self._listeners:
            listener(rig, path)

    def refined(self, avatar: GaussianAvatar) -> None:
        """New attributes for the same binding and head (a refinement report): nothing else changes."""
        self._set(Rig(avatar, self.rig.model), self.path)

    def saved_as(self, path: str) -> None:
        self.path = path

    def _set(self, rig: Rig, path: str | None) -> None:
        self.rig, self.path = rig, path
        self.spikes: np.ndarray = spike_mask(rig.avatar, self.spike_cfg).numpy()
        self.version += 1
