"""Learned feed-forward generator (issue 8): K source portraits -> every Gaussian attribute on the
shared layout, as residuals over an analytic initialization, in one forward pass.

Pipeline for one subject with K sources (any K >= 1, any order):
1. analytic initialization: the layout (init_avatar on the head model) posed with each source's
   head parameters; each Gaussian's colour is the visibility-weighted mean of the source pixels
   at its projected centre (the parameter-free colour lifting, without occlusion test);
2. a small CNN (trained from scratch) encodes each source image into a feature map;
3. per source, features and colour are sampled bilinearly at each Gaussian's projected centre,
   with a visibility weight (inside the image x facing the camera) and the view direction in the
   Gaussian's face frame, and mapped by a shared per-source MLP;
4. a weighted MEAN over the sources (no parameters, so the result does not depend on the order
   or the number of sources) plus a coverage channel 1 - prod(1 - w_k);
5. a per-Gaussian MLP decoder, also given a positional encoding of the Gaussian's neutral
   position and its face-local mean, predicts bounded residuals for mean, rotation, log-scale,
   opacity logit and SH. Its last layer starts at zero, so an untrained generator returns the
   analytic initialization exactly.

Cameras follow docs/conventions.md (OpenCV viewmat world-to-camera, K in pixels). The output keeps the
input layout: same faces, same count, same identity.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from savatar.core.gaussians.binding import deform, face_frames, init_avatar, quat_multiply
from savatar.core.gaussians.gaussians import GaussianAvatar, rgb_to_sh0, sh0_to_rgb, sh_coeff_count
from savatar.core.head.head_model import HeadModel

# Below this total visibility weight a Gaussian keeps the head model's colour in the analytic
# initialization (same threshold as the build pipeline's MIN_SEEN_WEIGHT).
MIN_SEEN_WEIGHT = 0.02
# Cosine of the viewing angle below which a source gives no weight: grazing views smear one
# pixel over a long strip of surface.
MIN_COS = 0.15


@dataclass
class GeneratorConfig:
    """Model size and residual bounds.

    count, layout_seed, sh_degree: the default layout (init_avatar on the open head model);
    features: channels of the image feature map; hidden: width of both MLPs;
    pe_bands: Fourier bands of the positional encoding of the neutral position (metres / pe_scale);
    image_size: sources are resized to this square side before encoding (K scaled to match);
    max_mean / max_rot / max_log_scale: tanh bounds of the residuals (face units, quaternion
    vector part, log units).
    """

    count: int = 1000
    layout_seed: int = 0
    sh_degree: int = 0
    features: int = 16
    hidden: int = 64
    pe_bands: int = 4
    pe_scale: float = 0.1
    image_size: int = 64
    max_mean: float = 0.25
    max_rot: float = 0.25
    max_log_scale: float = 0.7


@dataclass
class Views:
    """K views of one subject, each with its camera and head parameters.

    images: (K, H, W, 3) float32 in [0, 1]; viewmats: (K, 4, 4) world-to-camera;
    Ks: (K, 3, 3) pixels; expr: (K, E); pose: (K, 15); translation: (K, 3).
    """

    images: torch.Tensor
    viewmats: torch.Tensor
    Ks: torch.Tensor
    expr: torch.Tensor
    pose: torch.Tensor
    translation: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, idx: Sequence[int] | torch.Tensor) -> "Views":
        """The views at idx (in that order)."""
        i = torch.as_tensor(idx, dtype=torch.long)
        return Views(*(t[i] for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.images, self.viewmats, self.Ks, self.expr, self.pose, self.translation

    def to(self, device: torch.device | str) -> "Views":
        return Views(*(t.to(device) for t in self.tensors()))

    def resized(self, size: int) -> "Views":
        """Square images of side size (K rescaled per axis): the encoder sees one scale."""
        h, w = self.images.shape[1:3]
        if (h, w) == (size, size):
            return self
        img = F.interpolate(self.images.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)
        Ks = self.Ks.clone()
        Ks[:, 0] *= size / w
        Ks[:, 1] *= size / h
        return replace(self, images=img.permute(0, 2, 3, 1).contiguous(), Ks=Ks)

    @staticmethod
    def cat(views: Sequence["Views"]) -> "Views":
        return Views(*(torch.cat(ts) for ts in zip(*(v.tensors() for v in views))))


@lru_cache(maxsize=1)
def open_head() -> HeadModel:
    """The open head model, shared (kept out of Generator so its buffers are not module state
    that DDP would broadcast every step)."""
    from savatar.core.head.open_head import load_open_head_data

    return HeadModel(load_open_head_data())


def posed_vertices(model: HeadModel, shape: torch.Tensor, views: Views) -> torch.Tensor:
    """Mesh of identity shape (S,) in each view's head parameters -> (K, V, 3), no gradient
    (head parameters are inputs here, not something the generator learns)."""
    k = len(views)
    with torch.no_grad():
        return model(shape=shape[None].expand(k, -1), expr=views.expr, pose=views.pose,
                     translation=views.translation).vertices


def project(points: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (N, 3) -> pixel positions (N, 2) (pixel centres at +0.5) and depth z (N,)."""
    xc = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = xc[:, 2]
    uv = (xc[:, :2] / z.clamp_min(1e-6)[:, None]) @ K[:2, :2].T + K[:2, 2]
    return uv, z


def camera_centre(viewmat: torch.Tensor) -> torch.Tensor:
    """(4, 4) world-to-camera -> camera centre (3,) in world coordinates."""
    return -viewmat[:3, :3].T @ viewmat[:3, 3]


def positional_encoding(x: torch.Tensor, bands: int) -> torch.Tensor:
    """(N, D) -> (N, D (1 + 2 bands)): x, sin and cos of 2^b pi x."""
    freqs = (2.0 ** torch.arange(bands, dtype=x.dtype, device=x.device)) * math.pi
    arg = x[:, :, None] * freqs  # (N, D, B)
    return torch.cat([x, arg.sin().flatten(1), arg.cos().flatten(1)], 1)


@dataclass
class SourceSamples:
    """What K sources say about N Gaussians. rgb: (K, N, 3) pixel colour at the projected centre;
    weight: (K, N) visibility in [0, 1]; view: (K, N, 3) unit direction to the camera in the
    Gaussian's face frame; uv_grid: (K, N, 2) positions in grid_sample's [-1, 1] coordinates."""

    rgb: torch.Tensor
    weight: torch.Tensor
    view: torch.Tensor
    uv_grid: torch.Tensor


def sample_sources(base: GaussianAvatar, sources: Views, model: HeadModel) -> SourceSamples:
    """Project every Gaussian of base into every source and sample colour and visibility there.

    Visibility = inside the image x in front of the camera x a ramp of the cosine between the
    face normal and the direction to the camera (0 below MIN_COS). There is no depth test: a
    Gaussian behind the nose in a side view is counted as seen (cheap, and the learned part can
    discount it from the features).
    """
    verts = posed_vertices(model, base.shape.to(sources.images), sources)
    faces = model.faces
    h, w = sources.images.shape[1:3]
    idx = base.face.long()
    weights, views, grids = [], [], []
    with torch.no_grad():
        for k in range(len(sources)):
            g = deform(base, verts[k], faces)
            R = face_frames(verts[k], faces)[0].index_select(0, idx)  # (N, 3, 3) columns a0, normal, a2
            uv, z = project(g.means, sources.viewmats[k], sources.Ks[k])
            to_cam = F.normalize(camera_centre(sources.viewmats[k]) - g.means, dim=1)
            cos = (R[:, :, 1] * to_cam).sum(1)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h) & (z > 1e-3)
            weights.append(inside * ((cos - MIN_COS) / (1 - MIN_COS)).clamp(0, 1) ** 2)
            views.append(torch.einsum("nji,nj->ni", R, to_cam))  # R^T d: the face-frame direction
            grids.append(torch.stack([2 * uv[:, 0] / w - 1, 2 * uv[:, 1] / h - 1], 1))
        grid = torch.stack(grids)
        rgb = F.grid_sample(sources.images.permute(0, 3, 1, 2), grid[:, None], mode="bilinear",
                            padding_mode="border", align_corners=False)[:, :, 0].transpose(1, 2)
    return SourceSamples(rgb, torch.stack(weights), torch.stack(views), grid)


def analytic_colours(base: GaussianAvatar, samples: SourceSamples) -> torch.Tensor:
    """Parameter-free colour lifting: visibility-weighted mean colour (N, 3), the head model's
    colour (base SH degree 0) where no source sees the Gaussian."""
    wsum = samples.weight.sum(0)
    lifted = (samples.weight[:, :, None] * samples.rgb).sum(0) / wsum.clamp_min(1e-12)[:, None]
    default = sh0_to_rgb(base.sh[:, 0]).clamp(0, 1)
    return torch.where((wsum > MIN_SEEN_WEIGHT)[:, None], lifted, default)


def analytic_init(base: GaussianAvatar, sources: Views, model: HeadModel | None = None) -> GaussianAvatar:
    """base with its degree-0 SH replaced by the colours lifted from the sources."""
    samples = sample_sources(base, sources, model or open_head())
    sh = base.sh.clone()
    sh[:, 0] = rgb_to_sh0(analytic_colours(base, samples))
    return replace(base, sh=sh, metadata=dict(base.metadata))


class ImageEncoder(nn.Module):
    """(K, 3, H, W) in [0, 1] -> (K, C, H/2, W/2) features; a few 3x3 convolutions (receptive
    field about 11 px at the input) trained from scratch."""

    def __init__(self, features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, features, 3, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


class Generator(nn.Module):
    """K sources -> GaussianAvatar on the layout of `base` (see the module docstring).

    forward(base, sources) -> GaussianAvatar; base: any layout on the open head model
    (default: self.default_layout()); sources: Views with K >= 1.
    """

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        self.encoder = ImageEncoder(cfg.features)
        pe_dim = 3 * (1 + 2 * cfg.pe_bands)
        self.per_source = nn.Sequential(nn.Linear(cfg.features + 3 + 1 + 3, cfg.hidden), nn.SiLU(),
                                        nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU())
        self.n_sh = sh_coeff_count(cfg.sh_degree)
        self.out_dims = (3, 3, 3, 1, 3 * self.n_sh)  # mean, rot vector part, log-scale, opacity, SH
        self.decoder = nn.Sequential(nn.Linear(cfg.hidden + 1 + 3 + pe_dim + 3, cfg.hidden), nn.SiLU(),
                                     nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(),
                                     nn.Linear(cfg.hidden, sum(self.out_dims)))
        # Zero residuals at the start: training begins from the analytic initialization.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def default_layout(self) -> GaussianAvatar:
        """The configured layout (init_avatar on the open head model), a fresh copy."""
        return _layout(self.cfg.count, self.cfg.layout_seed, self.cfg.sh_degree)

    def forward(self, base: GaussianAvatar, sources: Views) -> GaussianAvatar:
        cfg = self.cfg
        if len(sources) < 1:
            raise ValueError("the generator needs at least one source")
        if base.sh.shape[1] != self.n_sh:
            raise ValueError(f"base has {base.sh.shape[1]} SH coefficients, the generator predicts {self.n_sh}")
        dev = next(self.parameters()).device
        base = _avatar_to(base, dev)
        sources = sources.to(dev).resized(cfg.image_size)
        model = open_head().to(dev)
        samples = sample_sources(base, sources, model)
        colour = analytic_colours(base, samples)

        feat_maps = self.encoder(sources.images.permute(0, 3, 1, 2))  # (K, C, h, w)
        feats = F.grid_sample(feat_maps, samples.uv_grid[:, None], mode="bilinear", padding_mode="border",
                              align_corners=False)[:, :, 0].transpose(1, 2)  # (K, N, C)
        per = self.per_source(torch.cat([feats, samples.rgb, samples.weight[:, :, None], samples.view], 2))
        w = samples.weight[:, :, None]
        pooled = (w * per).sum(0) / w.sum(0).clamp_min(1e-6)  # (N, hidden): order-free, any K
        coverage = 1 - torch.prod(1 - samples.weight, 0)[:, None]

        with torch.no_grad():
            neutral = model(shape=base.shape[None]).vertices[0]
            canon = deform(base, neutral, model.faces).means
        pe = positional_encoding(canon / cfg.pe_scale, cfg.pe_bands)
        out = self.decoder(torch.cat([pooled, coverage, colour, pe, base.mean], 1))
        d_mean, d_rot, d_scale, d_opacity, d_sh = out.split(self.out_dims, 1)

        delta_q = torch.cat([torch.ones_like(d_rot[:, :1]), cfg.max_rot * torch.tanh(d_rot)], 1)
        rot = F.normalize(quat_multiply(base.rot, F.normalize(delta_q, dim=1)), dim=1)
        sh0 = rgb_to_sh0(colour)
        sh = torch.cat([sh0[:, None], base.sh[:, 1:]], 1) + d_sh.reshape(-1, self.n_sh, 3)
        return replace(base, mean=base.mean + cfg.max_mean * torch.tanh(d_mean), rot=rot,
                       log_scale=base.log_scale + cfg.max_log_scale * torch.tanh(d_scale),
                       opacity_logit=base.opacity_logit + d_opacity[:, 0], sh=sh, metadata=dict(base.metadata))


@lru_cache(maxsize=4)
def _cached_layout(count: int, seed: int, sh_degree: int) -> GaussianAvatar:
    from savatar.core.head.open_head import load_open_head_data

    return init_avatar(load_open_head_data(), count, seed=seed, sh_degree=sh_degree)


def _layout(count: int, seed: int, sh_degree: int) -> GaussianAvatar:
    a = _cached_layout(count, seed, sh_degree)
    return _avatar_to(a, a.face.device, copy=True)


def _avatar_to(a: GaussianAvatar, device: torch.device | str, copy: bool = False) -> GaussianAvatar:
    fields = ("face", "mean", "rot", "log_scale", "opacity_logit", "sh", "shape", "static_offset", "default_expr")
    moved = {f: getattr(a, f).to(device) for f in fields}
    if copy:
        moved = {f: t.clone() for f, t in moved.items()}
    return replace(a, **moved, metadata=dict(a.metadata))


class CheckpointError(ValueError):
    """A file that is not a generator checkpoint this version can load safely; the message is
    one line naming the file."""


CHECKPOINT_FORMAT = "savatar-generator-1"
_CHECKPOINT_KEYS = ("model", "optimizer", "step", "config", "generator_config", "format")


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """The plain contents of a generator checkpoint
    (savatar.core.build.generator_train.save_checkpoint).

    Loaded with torch's weights-only unpickler: tensors and plain data only. A full pickle can
    run any code when it is opened, and checkpoints are files people share, so anything else is
    refused (CheckpointError) before a single object of it is built."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: the checkpoint holds more than tensors and plain data "
                              f"(loading it could run code)") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such generator checkpoint") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable generator checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a savatar generator checkpoint (format {CHECKPOINT_FORMAT} expected)")
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: generator checkpoint without {', '.join(missing)}")
    return state


def load_generator(ckpt: str | Path, device: torch.device | str = "cpu") -> Generator:
    """A Generator from a checkpoint written by savatar.core.build.generator_train (eval mode);
    CheckpointError when the file is not one."""
    state = read_checkpoint(ckpt, device)
    try:
        gen = Generator(GeneratorConfig(**state["generator_config"])).to(device)
        gen.load_state_dict(state["model"])
    except (TypeError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{ckpt}: generator checkpoint of another layout ({reason})") from None
    return gen.eval()


def build_with_generator(ckpt: str | Path, images: Sequence[str | Path | np.ndarray] | Views,
                         count: int | None = None, device: torch.device | str = "cpu") -> GaussianAvatar:
    """The `savatar build --generator CKPT` path: portraits -> avatar in one forward pass.

    images: portrait files or (H, W, 3) arrays (checked and fitted with the build pipeline's
    landmark fit, savatar.core.build.build, which needs MediaPipe), or Views whose cameras and head
    parameters are already known. count: Gaussians (default: the checkpoint's layout size).
    """
    gen = load_generator(ckpt, device)  # a bad checkpoint fails before any fitting
    if isinstance(images, Views):
        return _generate(gen, ckpt, images, None, count)
    views, shape = _fit_portraits(images)
    return _generate(gen, ckpt, views, shape, count)


def _generate(gen: Generator, ckpt: str | Path, views: Views, shape: torch.Tensor | None,
              count: int | None) -> GaussianAvatar:
    """One forward pass of the generator (loaded from ckpt) on its layout (of count Gaussians)
    with identity shape (the layout's when None)."""
    base = _layout(count or gen.cfg.count, gen.cfg.layout_seed, gen.cfg.sh_degree)
    if shape is not None:
        base.shape = shape
    with torch.no_grad():
        avatar = gen(base, views)
    avatar = _avatar_to(avatar, "cpu")
    avatar.metadata["build"] = {"generator": str(ckpt), "sources": len(views),
                                "generator_config": asdict(gen.cfg)}
    return avatar


def build_from_portraits(ckpt: str | Path, paths: Sequence[str | Path], count: int | None = None,
                         progress: Callable[[float, str], None] | None = None):
    """Like savatar.core.build.build.build_avatar, with a trained generator: every input is
    checked and reported (SourceResult), the usable ones are fitted (identity and per-source head
    parameters, as the build does) and go through one forward pass. Like build_avatar, the
    avatar keeps the usable portraits for refinement (metadata["sources"],
    savatar.core.build.build.stored_sources): the fitted parameters and cameras the generator
    was given, with loss masks from a person segmentation. Returns (avatar, results);
    BuildError when no input is usable."""
    from savatar.core.build.build import person_masks, stored_sources
    from savatar.core.head.open_head import load_open_head_data

    report = progress or (lambda fraction, stage: None)
    gen = load_generator(ckpt)  # a bad checkpoint fails before any fitting
    report(0.1, "checking portraits")
    results = _check_portraits(paths)
    good = [r for r in results if r.ok]
    report(0.2, "fit")
    data = load_open_head_data()
    views, shape = _fit_sources(data, good)
    report(0.4, "generator")
    avatar = _generate(gen, ckpt, views, shape, count)
    report(0.7, "segmentation")
    person_masks(good)
    report(0.9, "sources")
    avatar.metadata["sources"] = stored_sources(good, data, shape.numpy())
    report(1.0, "done")
    return avatar, results


def _check_portraits(images: Sequence[str | Path | np.ndarray]) -> list:
    """One SourceResult per input (savatar.core.build.build.check_sources, with the build's
    landmarker settings); BuildError when none is usable."""
    from savatar.core.build.build import BuildError, check_sources
    from savatar.core.drive.face_landmarks import FaceLandmarker

    with FaceLandmarker(static_images=True, max_faces=4) as landmarker:
        results, _ = check_sources(list(images), landmarker)
    if not any(r.ok for r in results):
        raise BuildError("no usable portrait: " + ("; ".join(r.line() for r in results) or "no input given"))
    return results


def _fit_sources(data, good: list) -> tuple[Views, torch.Tensor]:
    """Usable SourceResults -> (Views in the tracking world of savatar.core.build.build,
    identity shape (S,)). The fit (savatar.core.build.build.fit_identity) writes each source's
    K, expr, pose and translation into it."""
    from savatar.core.build.build import fit_identity
    from savatar.core.drive.tracking import TRACKING_VIEWMAT

    shape = fit_identity(data, good)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    # Sources of different sizes: each is resized to one square side first (K follows), so they
    # stack; the generator resizes again to its own image_size.
    side = max(max(r.image.shape[:2]) for r in good)
    parts = []
    for r in good:
        v = Views(f32(r.image)[None], f32(TRACKING_VIEWMAT)[None], f32(r.K)[None], f32(r.expr)[None],
                  f32(r.pose)[None], f32(r.translation)[None])
        parts.append(v.resized(side))
    return Views.cat(parts), f32(shape)


def _fit_portraits(images: Sequence[str | Path | np.ndarray]) -> tuple[Views, torch.Tensor]:
    """Portraits -> (Views in the tracking world of savatar.core.build.build, identity shape
    (S,))."""
    from savatar.core.head.open_head import load_open_head_data

    good = [r for r in _check_portraits(images) if r.ok]
    return _fit_sources(load_open_head_data(), good)
