"""Keep a refinement run's best state by its held-out frames, and stop once they stop improving.

Refined on a few dozen frames of one clip, an avatar soon starts fitting those frames rather than
the person: on the real development clips, a few hundred iterations on the first half made the
held-out second half worse than fifty did (savatar build --video, bench video_build). Frames held
out of training (the Refiner's held_out; best a separate stretch of the clip) measure that as the
run goes: KeepBest, called with every Report, snapshots the parameters whenever their PSNR
improves, asks the Refiner to stop after `patience` reports without a gain, and restore() puts
the best snapshot back before the avatar is written.
"""
from __future__ import annotations

import torch

MIN_GAIN_DB = 0.01  # smaller changes of the held-out PSNR are noise, not progress


def held_out_tail(frame_count: int, fraction: float, min_frames: int) -> tuple[int, ...]:
    """Positions of the last `fraction` of frame_count frames (at least two; the clip's last
    stretch when frames come in clip order), or () when there are fewer than min_frames."""
    if fraction <= 0 or frame_count < min_frames:
        return ()
    return tuple(range(frame_count - max(2, round(fraction * frame_count)), frame_count))


class KeepBest:
    """Report callback for a Refiner with held-out frames. best_db and best_iteration describe the
    snapshot; stopped_early says whether patience ran out (rather than time, iterations or the
    user)."""

    def __init__(self, refiner, patience: int | None = None, min_gain_db: float = MIN_GAIN_DB):
        self.refiner, self.patience, self.min_gain_db = refiner, patience, min_gain_db
        self.best_db: float | None = None
        self.best_iteration = 0
        self._best: dict[str, torch.Tensor] | None = None
        self._stale = 0
        self.stopped_early = False

    def __call__(self, report) -> None:
        db = report.psnr_mask
        if db is None:
            return
        if self.best_db is None or db > self.best_db + self.min_gain_db:
            self.best_db, self.best_iteration, self._stale = float(db), int(report.iteration), 0
            self._best = {k: p.detach().clone() for k, p in self.refiner.params.items()}
            return
        self._stale += 1
        if self.patience is not None and self._stale >= self.patience and not self.stopped_early:
            self.stopped_early = True
            self.refiner.stop()

    def restore(self) -> bool:
        """Put the best snapshot's parameters back into the refiner and mark the run finished at
        its iteration (config.iterations = iteration = best_iteration: the avatar is written as a
        finished run, without resume state). False when there is no snapshot or the refiner
        already holds it."""
        r = self.refiner
        if self._best is None or self.best_iteration == r.iteration:
            return False
        with torch.no_grad():
            for k, p in r.params.items():
                p.copy_(self._best[k])
        r.iteration = self.best_iteration
        r.config.iterations = self.best_iteration
        del r.loss_history[self.best_iteration:]
        return True
