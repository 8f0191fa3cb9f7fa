"""KeepBest (savatar.core.refine.keep_best): the parameters at the best held-out PSNR come back,
the run is asked to stop once `patience` reports bring no gain, and the restored run reads as a
finished one at the best iteration."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from savatar.core.refine.keep_best import KeepBest


class FakeRefiner:
    """What KeepBest touches: params, iteration, config.iterations, loss_history, stop()."""

    def __init__(self) -> None:
        self.params = {"sh": torch.zeros(4, 1, 3), "mean": torch.zeros(4, 3)}
        self.iteration = 0
        self.config = SimpleNamespace(iterations=1000)
        self.loss_history: list[float] = []
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self.iteration += 1
            self.loss_history.append(1.0 / self.iteration)
            for p in self.params.values():
                p += 1.0  # the state changes every step: a snapshot must be a copy


def test_keeps_the_best_and_stops_after_patience():
    r = FakeRefiner()
    keep = KeepBest(r, patience=2)
    for db in (10.0, 12.0, 11.0, 12.005, 9.0, 8.0):  # 12.005: within the noise, not a gain
        r.advance(20)
        keep(SimpleNamespace(iteration=r.iteration, psnr_mask=db))
    assert keep.best_db == 12.0 and keep.best_iteration == 40
    assert keep.stopped_early and r.stops == 1  # asked once, after the 2nd report without a gain
    assert keep.restore()
    assert all(torch.all(p == 40.0) for p in r.params.values())
    assert r.iteration == r.config.iterations == 40 and len(r.loss_history) == 40


def test_without_held_out_frames_nothing_is_kept():
    r = FakeRefiner()
    keep = KeepBest(r, patience=2)
    r.advance(5)
    keep(SimpleNamespace(iteration=r.iteration, psnr_mask=None))
    assert keep.best_db is None and not keep.restore() and r.stops == 0
    assert r.iteration == 5 and torch.all(r.params["sh"] == 5.0)


def test_the_last_state_best_is_left_as_it_is():
    r = FakeRefiner()
    keep = KeepBest(r)
    for db in (10.0, 11.0):
        r.advance(10)
        keep(SimpleNamespace(iteration=r.iteration, psnr_mask=db))
    assert not keep.restore() and r.iteration == 20 and r.config.iterations == 1000
