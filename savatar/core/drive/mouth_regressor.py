"""A small learned audio -> mouth-opening model, run live in numpy (no torch, no download).

Trained offline by scripts/train_mouth_regressor.py on real talking clips with their own synced
sound: the target is MediaPipe's mouth opening (inner lips over the inter-ocular distance) on the
real frames, z-scored per clip, so the model predicts how far the mouth is open relative to the
speaker's own range. The weights ship as savatar/assets/mouth_regressor.npz (a few thousand
numbers); the asset also records the clips it was trained on.

Per 10 ms hop (one `AudioFrame` of speech_features.AudioAnalyzer):
1. `hop_features`: the frame's log-mel shape (band levels minus their mean: the microphone's gain
   does not matter) and its loudness against the noise floor and the recent peak, voice activity,
   voicing and the speaker-normalised formants: (N_FEATURES,).
2. Normalised by the training set's mean and spread, each hop is projected to `hidden1` numbers
   (tanh); the last `context` projections, `stride` hops apart, go through `hidden2` tanh units
   to one number: the mouth opening of the newest hop, in the speaker's z units. The model is
   causal: file mode reads it `lipsync.MOUTH_LEAD_S` later, which centres its context on the
   frame shown.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from savatar.core.drive.speech_features import N_MELS, AudioFrame

__all__ = ["ASSET", "N_FEATURES", "MouthRegressor", "hop_features"]

ASSET = Path(__file__).resolve().parents[2] / "assets" / "mouth_regressor.npz"
N_FEATURES = N_MELS + 8


def hop_features(frame: AudioFrame) -> np.ndarray:
    """(N_FEATURES,) float32 inputs of one analysed hop (see the module docstring)."""
    mel = frame.log_mel.astype(np.float32)
    shape = (mel - mel.mean()) / 10.0
    sonorant = frame.sonorant
    extra = np.array([
        min(max(frame.snr_db, 0.0), 60.0) / 30.0,
        frame.level,
        min(frame.local_dip_db, 40.0) / 20.0,
        float(frame.active),
        float(frame.quiet),
        frame.voicing,
        frame.z1 if sonorant else 0.0,
        frame.z2 if sonorant else 0.0,
    ], np.float32)
    return np.concatenate([shape, extra])


class MouthRegressor:
    """Streaming mouth opening (speaker z units) from hop features; see the module docstring.

    weights: the arrays of the asset, for an average of M networks trained alike (different
    seeds and validation clips: the average is steadier than any one): mean, scale
    (N_FEATURES,); w1 (M, hidden1, N_FEATURES), b1 (M, hidden1), w2 (M, hidden2, context *
    hidden1) with the context's taps oldest first, b2 (M, hidden2), w3 (M, hidden2), b3 (M,);
    context, stride (scalars). A single network's arrays without the leading M also load.
    """

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        try:
            self.mean = np.asarray(weights["mean"], np.float32)
            self.scale = np.asarray(weights["scale"], np.float32)
            w1, b1, w2, b2, w3, b3 = (np.asarray(weights[k], np.float32) for k in ("w1", "b1", "w2", "b2", "w3", "b3"))
            self.context = int(weights["context"])
            self.stride = int(weights["stride"])
        except KeyError as exc:
            raise ValueError(f"mouth regressor weights lack {exc}") from None
        if w1.ndim == 2:  # one network
            w1, b1, w2, b2, w3, b3 = w1[None], b1[None], w2[None], b2[None], w3[None], b3.reshape(1)
        m, h1 = w1.shape[:2]
        if w1.shape[2] != N_FEATURES or w2.shape[0] != m or w2.shape[2] != self.context * h1:
            raise ValueError(f"mouth regressor weights do not fit: w1 {w1.shape}, w2 {w2.shape}, "
                             f"{N_FEATURES} features, context {self.context}")
        # The M first layers as one (M * hidden1, N_FEATURES) matrix; w2 as (M, hidden2, context,
        # hidden1) so the ring buffer's rows, oldest first, meet their weights directly.
        self._w1 = w1.reshape(m * h1, N_FEATURES)
        self._b1 = b1.reshape(m * h1)
        self._w2 = w2.reshape(m, w2.shape[1], self.context, h1)
        self._b2, self._w3, self._b3 = b2, w3, b3
        self.n_models, self.hidden1 = m, h1
        self._span = (self.context - 1) * self.stride + 1
        self.reset()

    @classmethod
    def load(cls, path: str | Path = ASSET) -> "MouthRegressor":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no mouth regressor weights (scripts/train_mouth_regressor.py makes them)")
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    @property
    def context_s(self) -> float:
        """How far back (seconds at 10 ms hops) the newest output looks."""
        return (self._span - 1) * 0.01

    def reset(self) -> None:
        """Forget the past (a new speaker or stream)."""
        self._hist = np.zeros((self._span, self.n_models, self.hidden1), np.float32)
        self._n = 0

    def _project(self, x: np.ndarray) -> np.ndarray:
        """(..., N_FEATURES) -> (..., M, hidden1)."""
        h = np.tanh(((x - self.mean) / self.scale) @ self._w1.T + self._b1)
        return h.reshape(*h.shape[:-1], self.n_models, self.hidden1)

    def _head(self, taps: np.ndarray) -> np.ndarray:
        """taps (..., context, M, hidden1) -> (...,) the networks' mean output."""
        z = np.tanh(np.einsum("mokh,...kmh->...mo", self._w2, taps) + self._b2)
        return (np.einsum("...mo,mo->...m", z, self._w3) + self._b3).mean(axis=-1)

    def step(self, features: np.ndarray) -> float:
        """features: (N_FEATURES,) of the newest hop -> its mouth opening (z units)."""
        h = self._project(np.asarray(features, np.float32))
        if self._n == 0:  # no past yet: as if this hop had lasted the whole context
            self._hist[:] = h
        self._hist[self._n % self._span] = h
        self._n += 1
        idx = (self._n - 1 - (self.context - 1 - np.arange(self.context)) * self.stride) % self._span
        return float(self._head(self._hist[idx]))

    def run(self, features: np.ndarray) -> np.ndarray:
        """features: (T, N_FEATURES) of consecutive hops -> (T,), as step() hop by hop from reset()."""
        h = self._project(np.asarray(features, np.float32))
        if len(h) == 0:
            return np.zeros(0, np.float32)
        pad = np.concatenate([np.repeat(h[:1], self._span - 1, axis=0), h])
        taps = np.stack([pad[k * self.stride:k * self.stride + len(h)] for k in range(self.context)], axis=1)
        return self._head(taps).astype(np.float32)
