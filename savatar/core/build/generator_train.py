"""Training of the feed-forward generator (savatar.core.build.generator): data adapters, the
two-phase schedule, checkpoints, and distribution with torch.distributed.

Schedule
--------
Phase 1, monocular-temporal (`phase1_steps`): sources and targets are different frames of one
subject's sequence (a talking-head video). Plenty of data, every expression and head pose, but
one camera: the model learns appearance under deformation.

Phase 2, multi-view-spatial (`phase2_steps`): sources and targets are different cameras at one
time step of a multi-view capture: the model learns what the sides and unseen parts look like.

Anchor against collapse in phase 2: multi-view captures are few subjects, so training on them
alone lets the model overfit those identities and forget the monocular variety. We replay
phase-1 batches: every `replay_every`-th phase-2 step (default 3, i.e. 1 in 3) draws its batch
from the phase-1 data instead. We chose replay over a weight-space anchor (L2 to the phase-1
weights, EWC) because it keeps the same photometric objective on the data that defines the
behaviour we want to keep, costs nothing extra per step, needs no stored reference weights, and
the ratio is one interpretable number. A phase-2 step never mixes the two kinds in one batch, so
every batch stays one well-defined task.

Loss per sample: mean over its targets of the L1 photometric error of the generated avatar,
posed with the target's head parameters and rendered through the differentiable renderer
(render(..., backend=cfg.backend)), optionally + ssim_weight (1 - SSIM), plus the anti-spike
penalties (savatar.core.gaussians.antispike) of the generated avatar, each Gaussian's threshold
raised to its layout value (see anchored_penalties). Batch loss: mean over samples.

Data adapters (all stream from disk with a bounded LRU cache of decoded, resized frames)
---------------------------------------------------------------------------------------
- videos (phase 1): a folder of talking-head videos (.mp4 .avi .mov .mkv .webm). Each is tracked
  once with savatar.core.drive.tracking.track_video (absolute translations) and the result cached
  beside it as `<video>.track.npz` (expr, pose, translation, width, height, fov_y_deg); the
  camera is the tracking camera (TRACKING_VIEWMAT, intrinsics_for(width, height, fov_y_deg)).
- capture (phase 2): a multi-view capture folder:
      capture/cameras.json           {"<camera>": {"K": 3x3, "viewmat": 4x4 world-to-camera
                                                    (OpenCV), "width": W, "height": H}, ...}
      capture/<timestep>/<camera>.png    one image per camera (missing ones are skipped)
      capture/<timestep>/params.npz      expr (E,), pose (15,), translation (3,)
  Every subfolder with a params.npz is a time step; the head is the open head model at zero
  identity unless params.npz also holds shape (S,).
- synthetic (tests, smoke runs): frames rendered from known avatars (init_avatar with other
  seeds and colour tints) with the CPU renderer, either kind.

Distribution
------------
`train(cfg)` runs in one process; under torchrun (RANK / WORLD_SIZE in the environment) it
initializes the default process group (nccl on CUDA, gloo on CPU), wraps the objective in
DistributedDataParallel and gives each rank the batch indices rank::world_size of every global
batch (DistributedSampler's split), so the averaged gradient is the one of the whole batch.
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Hashable, Protocol, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from savatar.core.build.generator import (CHECKPOINT_FORMAT, Generator, GeneratorConfig, Views, open_head,
                                          posed_vertices, read_checkpoint)
from savatar.core.gaussians.antispike import QUANTITIES, AntiSpikeConfig, quantities, thresholds
from savatar.core.gaussians.binding import deform, init_avatar
from savatar.core.gaussians.gaussians import GaussianAvatar, rgb_to_sh0, sh0_to_rgb
from savatar.core.io.atomic import atomic_path
from savatar.core.render.api import render
from savatar.core.render.camera import orbit_camera

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


# ----------------------------------------------------------------------------------------------
# Samples and data


@dataclass
class Sample:
    """One training example: K sources and T targets of one subject. shape: (S,) identity
    coefficients of the head model (zeros when the data does not say)."""

    sources: Views
    targets: Views
    shape: torch.Tensor | None = None


class Dataset(Protocol):
    def sample(self, rng: np.random.Generator, k: int, targets: int) -> Sample:
        """K sources and `targets` targets, all distinct views; k may be lowered when the data
        has too few views."""


class FrameCache:
    """Bounded LRU cache: get(key, load) returns the cached value or load() (then evicts the
    least recently used entry above max_items)."""

    def __init__(self, max_items: int):
        self.max_items = max(1, int(max_items))
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        self._items[key] = value
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def _f32(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


def _pick(rng: np.random.Generator, available: int, k: int, targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct indices: (sources, targets); targets first, k lowered to what is left."""
    if available < targets + 1:
        raise ValueError(f"{available} views cannot give {targets} targets and a source")
    k = min(k, available - targets)
    idx = rng.permutation(available)[:k + targets]
    return idx[targets:], idx[:targets]


def _resize_frame(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 or float image (H, W, 3) -> float32 (size, size, 3) in [0, 1]."""
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(img.astype(np.float32), (size, size), interpolation=interp))


def _scaled_K(K: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    k = np.array(K, np.float64)
    k[0] *= size / width
    k[1] *= size / height
    return k


class SyntheticDataset:
    """Frames rendered from a few known avatars with the CPU renderer.

    mode "temporal": per subject `views` frames of random expression and head pose seen by one
    front camera; mode "multiview": per subject `steps` time steps, each seen by `views` cameras
    on an arc of +-45 degrees yaw. subjects: seeds; each subject is init_avatar(count, seed) on
    the open head with its vertex colours tinted by a seed-dependent colour.
    """

    def __init__(self, mode: str = "temporal", subjects: Sequence[int] = (1, 2, 3), count: int = 1500,
                 size: int = 32, views: int = 6, steps: int = 2, background: Sequence[float] = (0.0, 0.0, 0.0),
                 cache_frames: int = 512):
        if mode not in ("temporal", "multiview"):
            raise ValueError(f"mode must be 'temporal' or 'multiview', got {mode!r}")
        self.mode, self.subjects, self.count, self.size = mode, list(subjects), count, size
        self.views, self.steps = views, steps
        self.background = torch.tensor(list(background), dtype=torch.float32)
        self.cache = FrameCache(cache_frames)
        self._avatars: dict[int, GaussianAvatar] = {}

    def avatar(self, seed: int) -> GaussianAvatar:
        if seed not in self._avatars:
            from savatar.core.head.open_head import load_open_head_data

            a = init_avatar(load_open_head_data(), self.count, seed=seed, bake_light=True)
            tint = np.random.default_rng(1000 + seed).uniform(0.5, 1.3, 3)
            rgb = sh0_to_rgb(a.sh[:, 0]) * _f32(tint)
            a.sh[:, 0] = rgb_to_sh0(rgb.clamp(0, 1))
            self._avatars[seed] = a
        return self._avatars[seed]

    def _params(self, seed: int, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, frame, 7])
        n_expr = open_head().num_expr
        expr = np.clip(rng.normal(0, 0.3, n_expr), 0, 1).astype(np.float32)
        pose = np.zeros(15, np.float32)
        if self.mode == "temporal":
            pose[:3] = rng.uniform([-0.15, -0.35, -0.05], [0.15, 0.35, 0.05])  # pitch, yaw, roll
        pose[6] = rng.uniform(0.0, 0.2)  # jaw open
        return expr, pose, np.zeros(3, np.float32)

    def _camera(self, view: int):
        yaw = 0.0 if self.mode == "temporal" else -45.0 + 90.0 * view / max(self.views - 1, 1)
        pitch = 0.0 if self.mode == "temporal" else (8.0 if view % 2 else -4.0)
        return orbit_camera(yaw, pitch, 0.62, target=(0.0, -0.03, 0.0), width=self.size, height=self.size,
                            fov_y_deg=30.0)

    def view(self, seed: int, step: int, view: int) -> tuple[torch.Tensor, ...]:
        """(image (H, W, 3), viewmat, K, expr, pose, translation) of one frame (cached)."""
        return self.cache.get((seed, step, view), lambda: self._render(seed, step, view))

    def _render(self, seed: int, step: int, view: int) -> tuple[torch.Tensor, ...]:
        frame = view if self.mode == "temporal" else step
        expr, pose, trans = (_f32(x) for x in self._params(seed, frame))
        cam = self._camera(view)
        avatar = self.avatar(seed)
        with torch.no_grad():
            verts = posed_vertices(open_head(), avatar.shape, Views(torch.zeros(1, 1, 1, 3), torch.eye(4)[None],
                                                                    torch.eye(3)[None], expr[None], pose[None], trans[None]))[0]
            out = render(deform(avatar, verts, open_head().faces), _f32(cam.viewmat), _f32(cam.K),
                         cam.width, cam.height, self.background, backend="cpu")
        return out.rgb.contiguous(), _f32(cam.viewmat), _f32(cam.K), expr, pose, trans

    def sample(self, rng: np.random.Generator, k: int, targets: int) -> Sample:
        seed = self.subjects[int(rng.integers(len(self.subjects)))]
        step = 0 if self.mode == "temporal" else int(rng.integers(self.steps))
        src, tgt = _pick(rng, self.views, k, targets)
        make = lambda ids: Views(*(torch.stack(t) for t in zip(*(self.view(seed, step, int(i)) for i in ids))))  # noqa: E731
        return Sample(make(src), make(tgt), self.avatar(seed).shape)


class VideoFolderDataset:
    """Talking-head videos in a folder (phase 1); see the module docstring for the cache files.

    size: frames are resized to size x size (intrinsics follow); cache_frames: bound of the
    decoded-frame LRU cache (frames x size^2 x 12 bytes).
    """

    def __init__(self, folder: str | Path, size: int = 64, cache_frames: int = 512, fov_y_deg: float = 50.0,
                 progress: Callable[[str], None] | None = None):
        from savatar.core.drive.tracking import TRACKING_VIEWMAT, intrinsics_for

        self.folder = Path(folder)
        self.videos = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not self.videos:
            raise FileNotFoundError(f"{self.folder}: no video ({', '.join(VIDEO_SUFFIXES)})")
        self.size, self.fov_y_deg = size, fov_y_deg
        self.tracks = [self._track(v, progress) for v in self.videos]
        self.videos, self.tracks = zip(*((v, t) for v, t in zip(self.videos, self.tracks) if len(t["expr"]) >= 2))
        if not self.videos:
            raise ValueError(f"{self.folder}: no video has two frames")
        self.viewmat = _f32(TRACKING_VIEWMAT)
        self.Ks = [_f32(_scaled_K(intrinsics_for(int(t["width"]), int(t["height"]), float(t["fov_y_deg"])),
                                  int(t["width"]), int(t["height"]), size)) for t in self.tracks]
        self.cache = FrameCache(cache_frames)

    @staticmethod
    def cache_path(video: Path) -> Path:
        return video.with_name(video.name + ".track.npz")

    def _track(self, video: Path, progress: Callable[[str], None] | None) -> dict[str, np.ndarray]:
        cache = self.cache_path(video)
        if cache.is_file() and cache.stat().st_mtime >= video.stat().st_mtime:
            with np.load(cache) as z:
                return {k: z[k] for k in z.files}
        from savatar.core.drive.tracking import TrackerParams, track_video
        from savatar.core.head.open_head import load_open_head_data

        if progress is not None:
            progress(f"tracking {video.name}")
        motion = track_video(video, load_open_head_data(), params=TrackerParams(fov_y_deg=self.fov_y_deg),
                             relative_translation=False)
        cap = cv2.VideoCapture(str(video))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
        track = {"expr": motion.expr, "pose": motion.pose, "translation": motion.translation,
                 "width": np.array(w), "height": np.array(h), "fov_y_deg": np.array(self.fov_y_deg)}
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **track)
        return track

    def _decode(self, vi: int, fi: int) -> torch.Tensor:
        cap = cv2.VideoCapture(str(self.videos[vi]))
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, fi)
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok:
            raise OSError(f"{self.videos[vi]}: cannot read frame {fi}")
        return torch.from_numpy(_resize_frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.size))

    def view(self, vi: int, fi: int) -> tuple[torch.Tensor, ...]:
        t = self.tracks[vi]
        img = self.cache.get((vi, fi), lambda: self._decode(vi, fi))
        return img, self.viewmat, self.Ks[vi], _f32(t["expr"][fi]), _f32(t["pose"][fi]), _f32(t["translation"][fi])

    def sample(self, rng: np.random.Generator, k: int, targets: int) -> Sample:
        vi = int(rng.integers(len(self.videos)))
        src, tgt = _pick(rng, len(self.tracks[vi]["expr"]), k, targets)
        make = lambda ids: Views(*(torch.stack(t) for t in zip(*(self.view(vi, int(i)) for i in ids))))  # noqa: E731
        return Sample(make(src), make(tgt))


class CaptureDataset:
    """A multi-view capture folder (phase 2); layout in the module docstring."""

    def __init__(self, folder: str | Path, size: int = 64, cache_frames: int = 512):
        self.folder = Path(folder)
        cams_file = self.folder / "cameras.json"
        if not cams_file.is_file():
            raise FileNotFoundError(f"{cams_file}: missing (see savatar.core.build.generator_train)")
        cams = json.loads(cams_file.read_text())
        self.size = size
        self.cameras = {name: (_f32(c["viewmat"]), _f32(_scaled_K(c["K"], int(c["width"]), int(c["height"]), size)))
                        for name, c in sorted(cams.items())}
        self.steps = []  # (folder, camera names present)
        for d in sorted(p for p in self.folder.iterdir() if (p / "params.npz").is_file()):
            present = [c for c in self.cameras if (d / f"{c}.png").is_file()]
            if len(present) >= 2:
                self.steps.append((d, present))
        if not self.steps:
            raise ValueError(f"{self.folder}: no time step with params.npz and two camera images")
        self.cache = FrameCache(cache_frames)

    def _params(self, d: Path) -> dict[str, np.ndarray]:
        with np.load(d / "params.npz") as z:
            return {k: z[k] for k in z.files}

    def _decode(self, path: Path) -> torch.Tensor:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"{path}: cannot read the image")
        return torch.from_numpy(_resize_frame(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), self.size))

    def sample(self, rng: np.random.Generator, k: int, targets: int) -> Sample:
        d, present = self.steps[int(rng.integers(len(self.steps)))]
        p = self.cache.get((d, "params"), lambda: self._params(d))
        src, tgt = _pick(rng, len(present), k, targets)

        def make(ids: np.ndarray) -> Views:
            rows = []
            for i in ids:
                cam = present[int(i)]
                path = d / f"{cam}.png"
                img = self.cache.get(path, lambda: self._decode(path))
                rows.append((img, *self.cameras[cam], _f32(p["expr"]), _f32(p["pose"]), _f32(p["translation"])))
            return Views(*(torch.stack(t) for t in zip(*rows)))

        return Sample(make(src), make(tgt), _f32(p["shape"]) if "shape" in p else None)


class Mixture:
    """Several datasets of one phase: each sample comes from one of them, chosen uniformly."""

    def __init__(self, parts: Sequence[Dataset]):
        self.parts = list(parts)

    def sample(self, rng: np.random.Generator, k: int, targets: int) -> Sample:
        return self.parts[int(rng.integers(len(self.parts)))].sample(rng, k, targets)


def make_dataset(spec: dict, size: int, cache_frames: int, background: Sequence[float]) -> Dataset:
    """One data entry of the config: {"type": "videos" | "capture" | "synthetic", ...}."""
    kind = spec.get("type")
    if kind == "videos":
        return VideoFolderDataset(spec["path"], size=size, cache_frames=cache_frames,
                                  fov_y_deg=float(spec.get("fov_y_deg", 50.0)))
    if kind == "capture":
        return CaptureDataset(spec["path"], size=size, cache_frames=cache_frames)
    if kind == "synthetic":
        opts = {k: v for k, v in spec.items() if k != "type"}
        return SyntheticDataset(**{"size": size, "cache_frames": cache_frames, "background": background, **opts})
    raise ValueError(f"unknown data type {kind!r}: expected 'videos', 'capture' or 'synthetic'")


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a run needs (savatar train-generator reads it from JSON or TOML).

    temporal / multiview: data entries of phase 1 / phase 2 (see make_dataset); either may be
    empty, then every step uses the other. batch: samples per step over all ranks (divisible by
    the world size); k_min..k_max: sources per sample, drawn per sample; targets: rendered
    targets per sample; image_size: side of the loaded frames and rendered targets.
    """

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    temporal: list[dict] = field(default_factory=list)
    multiview: list[dict] = field(default_factory=list)
    phase1_steps: int = 1000
    phase2_steps: int = 1000
    replay_every: int = 3
    lr: float = 1e-3
    batch: int = 4
    k_min: int = 1
    k_max: int = 4
    targets: int = 2
    image_size: int = 64
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ssim_weight: float = 0.0
    antispike: AntiSpikeConfig = field(default_factory=AntiSpikeConfig)
    checkpoint: str = "generator.pt"
    checkpoint_every: int = 100
    resume: bool = True
    backend: str = "cpu"
    seed: int = 0
    cache_frames: int = 512
    log_every: int = 10

    @property
    def total_steps(self) -> int:
        return self.phase1_steps + self.phase2_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "generator" in d:
            d["generator"] = GeneratorConfig(**d["generator"])
        if "antispike" in d:
            d["antispike"] = AntiSpikeConfig(**d["antispike"])
        if "background" in d:
            d["background"] = tuple(float(x) for x in d["background"])
        cfg = cls(**d)
        if not 1 <= cfg.k_min <= cfg.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got {cfg.k_min}, {cfg.k_max}")
        return cfg


def load_config(path: str | Path) -> TrainConfig:
    """A JSON (.json) or TOML (.toml) config; relative data and checkpoint paths are relative
    to the config file's folder."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        import tomllib

        raw = tomllib.loads(path.read_text())
    else:
        raw = json.loads(path.read_text())
    for phase in ("temporal", "multiview"):
        for spec in raw.get(phase, []):
            if "path" in spec:
                spec["path"] = str(path.parent / spec["path"])
    if "checkpoint" in raw:
        raw["checkpoint"] = str(path.parent / raw["checkpoint"])
    return TrainConfig.from_dict(raw)


# ----------------------------------------------------------------------------------------------
# Loss


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two images (H, W, 3) in [0, 1] with 3x3 box windows (tiny images: a Gaussian
    11x11 window would cover most of a 32 px frame)."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    pool = lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx * mx, pool(y * y) - my * my, pool(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def render_views(avatar: GaussianAvatar, views: Views, cfg: TrainConfig) -> torch.Tensor:
    """avatar posed and rendered in every view -> (T, H, W, 3), differentiable."""
    model = open_head().to(avatar.mean.device)
    verts = posed_vertices(model, avatar.shape, views)
    h, w = views.images.shape[1:3]
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=avatar.mean.device)
    return torch.stack([render(deform(avatar, verts[t], model.faces), views.viewmats[t], views.Ks[t], w, h, bg,
                               backend=cfg.backend).rgb for t in range(len(views))])


def photometric_loss(avatar: GaussianAvatar, targets: Views, cfg: TrainConfig) -> torch.Tensor:
    """L1 (+ ssim_weight (1 - SSIM)) between the avatar rendered in the targets and their images."""
    pred = render_views(avatar, targets, cfg)
    loss = (pred - targets.images).abs().mean()
    if cfg.ssim_weight > 0:
        loss = loss + cfg.ssim_weight * torch.stack([1 - ssim(p, t) for p, t in zip(pred, targets.images)]).mean()
    return loss


def anchored_penalties(avatar: GaussianAvatar, base: GaussianAvatar, cfg: AntiSpikeConfig) -> torch.Tensor:
    """The three anti-spike hinges of savatar.core.gaussians.antispike, each Gaussian's threshold
    raised to its value in the base layout: a layout of few Gaussians has discs well over the
    default size bound (500 Gaussians: up to 20 face units), and the generator must not be pushed
    to shrink what it was given, only kept from growing spikes of its own. Scalar, weighted,
    summed."""
    q, q0, t = quantities(avatar), quantities(base), thresholds(cfg)
    w = {"anisotropy": cfg.weight_anisotropy, "size": cfg.weight_size, "offset": cfg.weight_offset}
    return sum(w[k] * torch.relu(q[k] - torch.maximum(q0[k].detach(), torch.full_like(q0[k], t[k]))).mean()
               for k in QUANTITIES)


class Objective(nn.Module):
    """The module DDP wraps: samples -> mean loss (scalar). One forward per step, so DDP's
    gradient hooks see every parameter exactly once per backward.

    Per sample: photometric loss + the anti-spike penalties of the generated avatar, anchored at
    the layout (anchored_penalties; regularize=False leaves the penalties out: the held-out image error alone).
    """

    def __init__(self, generator: Generator, cfg: TrainConfig, regularize: bool = True):
        super().__init__()
        self.generator = generator
        self.cfg = cfg
        self.regularize = regularize

    def forward(self, samples: Sequence[Sample]) -> torch.Tensor:
        dev = next(self.generator.parameters()).device
        losses = []
        for s in samples:
            base = self.generator.default_layout()
            if s.shape is not None:
                base.shape = s.shape.clone()
            avatar = self.generator(base, s.sources)
            loss = photometric_loss(avatar, s.targets.to(dev).resized(self.cfg.image_size), self.cfg)
            if self.regularize:
                loss = loss + anchored_penalties(avatar, base, self.cfg.antispike)
            losses.append(loss)
        return torch.stack(losses).mean()


@torch.no_grad()
def evaluate(generator: Generator, samples: Sequence[Sample], cfg: TrainConfig) -> float:
    """Mean photometric loss of the generator over samples (no gradient, no penalties)."""
    return float(Objective(generator, cfg, regularize=False)(samples))


# ----------------------------------------------------------------------------------------------
# Schedule, checkpoints, distribution


def phase_of(step: int, cfg: TrainConfig) -> str:
    """"temporal" (phase 1 or a replayed phase-1 batch) or "multiview" for a global step."""
    if step < cfg.phase1_steps:
        return "temporal"
    if cfg.replay_every > 0 and (step - cfg.phase1_steps) % cfg.replay_every == cfg.replay_every - 1:
        return "temporal"
    return "multiview"


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's share of a global batch: indices rank, rank + world, ... (DistributedSampler's
    split without padding; the batch must divide evenly for exact gradient averaging)."""
    return list(indices)[rank::world]


def batch_samples(data: dict[str, Dataset], step: int, indices: Sequence[int], cfg: TrainConfig) -> list[Sample]:
    """The samples at `indices` of global batch `step`. Each sample's randomness depends only on
    (seed, step, index), so every rank builds just its share and the split changes nothing."""
    phase = phase_of(step, cfg)
    if phase not in data:
        phase = next(iter(data))
    out = []
    for i in indices:
        rng = np.random.default_rng([cfg.seed, step, int(i)])
        k = int(rng.integers(cfg.k_min, cfg.k_max + 1))
        out.append(data[phase].sample(rng, k, cfg.targets))
    return out


def save_checkpoint(path: str | Path, generator: Generator, optimizer: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig) -> None:
    """torch.save of model, optimizer, step and config; written beside and renamed over path
    (savatar.core.io.atomic), so an interrupted save leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": generator.state_dict(), "optimizer": optimizer.state_dict(), "step": int(step),
             "config": cfg.to_dict(), "generator_config": asdict(generator.cfg), "format": CHECKPOINT_FORMAT}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, generator: Generator, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore model (and optimizer) state; returns the step to continue from. CheckpointError
    (one line naming the file) for anything but a plain-data generator checkpoint."""
    state = read_checkpoint(path, next(generator.parameters()).device)
    generator.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


@dataclass
class DistInfo:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this call created the process group and tears it down


def setup_distributed() -> DistInfo:
    """Join torchrun's process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1 and not dist.is_initialized():
        return DistInfo(0, 1, torch.device("cuda" if cuda else "cpu"), False)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        owns = True
    rank = dist.get_rank()
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
        torch.cuda.set_device(device)
    return DistInfo(rank, dist.get_world_size(), device, owns)


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around module when running with more than one rank."""
    if info.world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[info.device.index] if info.device.type == "cuda" else None)


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # per step run here (this rank's share of the batch)
    checkpoint: str


def build_data(cfg: TrainConfig) -> dict[str, Dataset]:
    data: dict[str, Dataset] = {}
    for phase in ("temporal", "multiview"):
        specs = getattr(cfg, phase)
        if specs:
            data[phase] = Mixture([make_dataset(s, cfg.image_size, cfg.cache_frames, cfg.background) for s in specs])
    if not data:
        raise ValueError("the config names no data: give 'temporal' and/or 'multiview' entries")
    return data


def train(cfg: TrainConfig, data: dict[str, Dataset] | None = None, steps: int | None = None,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Run the schedule from the checkpoint's step (when cfg.resume and it exists) to
    cfg.total_steps, or only `steps` more steps. Checkpoints every checkpoint_every steps and
    at the end (rank 0 writes)."""
    info = setup_distributed()
    try:
        if cfg.batch % info.world:
            raise ValueError(f"batch {cfg.batch} does not split evenly over {info.world} ranks")
        torch.manual_seed(cfg.seed)
        data = data or build_data(cfg)
        generator = Generator(cfg.generator).to(info.device)
        optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
        step = 0
        if cfg.resume and Path(cfg.checkpoint).is_file():
            step = load_checkpoint(cfg.checkpoint, generator, optimizer)
            if log and info.rank == 0:
                log(f"resumed from {cfg.checkpoint} at step {step}")
        objective = wrap_ddp(Objective(generator, cfg), info)
        end = cfg.total_steps if steps is None else min(cfg.total_steps, step + steps)
        losses: list[float] = []
        t0 = time.time()
        while step < end:
            samples = batch_samples(data, step, shard(range(cfg.batch), info.rank, info.world), cfg)
            optimizer.zero_grad(set_to_none=True)
            loss = objective(samples)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            if log and info.rank == 0 and (step % cfg.log_every == 0 or step == end):
                log(f"step {step}/{cfg.total_steps} {phase_of(step - 1, cfg)} loss {losses[-1]:.4f} "
                    f"({(time.time() - t0) / len(losses):.2f} s/step)")
            if info.rank == 0 and (step % cfg.checkpoint_every == 0 or step == end):
                save_checkpoint(cfg.checkpoint, generator, optimizer, step, cfg)
        if info.world > 1:
            dist.barrier()  # the last checkpoint is on disk before any rank returns
        return TrainResult(step, losses, cfg.checkpoint)
    finally:
        if info.owns_group:
            dist.destroy_process_group()
