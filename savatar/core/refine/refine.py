"""Layout-preserving refinement of a bound avatar against frames (docs/conventions.md, "Anti-spike
regularization").

The Refiner optimizes the face-local attributes (mean, rot, log_scale, opacity_logit, sh) with
Adam, and optionally a per-frame expression and pose correction. The binding (`face`) and the
Gaussian count never change: there is no densification or pruning, and every step checks it
(LayoutError). The three anti-spike penalties take the place of densification's size control.

Loss = L1 + lambda_dssim * (1 - SSIM) + sum of the weighted anti-spike hinges. After each step
the face's skin is kept closed (RefineConfig.keep_skin_closed, SkinFloor): its Gaussians never
get more transparent or much smaller than they started.

Learning rates (RefineConfig), in the avatar's face-local units (positions and scales relative
to the parent face scale k_f, about 3 mm on the open head). They follow GaussianAvatars, which
also optimizes face-local attributes with 3DGS's Adam setup:
- mean: 5e-3 face units decaying exponentially to 5e-5 over the run (3DGS's position schedule;
  3DGS's 1.6e-4 x scene extent is in world units, and a face unit is ~1/100 of a head, so the
  face-unit rate is larger by that ratio, then shrunk because a refined avatar starts close);
- log_scale 1.7e-2 (3DGS 5e-3 on world log-scales; face units change nothing for a log);
- rot 1e-3, opacity_logit 5e-2, sh degree 0 2.5e-3 and higher degrees 20x smaller (3DGS);
- per-frame expression/pose corrections 1e-3 (small: the tracker already fitted them).
All of them are multiplied by `lr_scale`, halved on every divergence roll-back.

Where frames come from (a rendered motion, a folder of images, a video, a build's portraits):
savatar.core.refine.frame_sources.
"""
from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from savatar.core.gaussians.antispike import PENALTY_MARGIN, AntiSpikeConfig, QuantityStats, penalties, statistics
from savatar.core.gaussians.binding import deform
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.head.head_model import HeadModel, HeadModelData
from savatar.core.refine.image_metrics import psnr, ssim
from savatar.core.render.api import render, resolve_backend

# Attributes the refiner optimizes; `face` is deliberately absent.
PARAMS = ("mean", "rot", "log_scale", "opacity_logit", "sh")


class LayoutError(AssertionError):
    """The Gaussian count or binding changed during refinement (densification or pruning)."""


@dataclass
class Frame:
    """One training view. image: (H, W, 3) float in [0, 1]; expr: (E,); pose: (15,);
    translation: (3,); viewmat: (4, 4) world-to-camera (OpenCV); K: (3, 3) pixels;
    mask: optional (H, W) or (H, W, 1) in [0, 1], 1 where the head is (pixels outside it do not
    count in the loss)."""

    image: torch.Tensor
    expr: torch.Tensor
    pose: torch.Tensor
    translation: torch.Tensor
    viewmat: torch.Tensor
    K: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class RefineConfig:
    """Everything a refinement run needs besides the data; learning rates: module docstring."""

    iterations: int = 10000
    lr_mean: float = 5e-3
    lr_mean_final: float = 5e-5
    lr_rot: float = 1e-3
    lr_log_scale: float = 1.7e-2
    lr_opacity: float = 5e-2
    lr_sh: float = 2.5e-3
    lr_frame: float = 1e-3
    lambda_dssim: float = 0.2
    antispike: AntiSpikeConfig = field(default_factory=AntiSpikeConfig)
    regularize: bool = True
    report_every: int = 100
    checkpoint_every: int = 1000
    # Snapshots for the divergence guard: often enough to lose little work, rarely enough that
    # copying 30K Gaussians and their Adam moments costs nothing next to the steps between.
    good_state_every: int = 50
    divergence_factor: float = 10.0
    backend: str = "auto"
    held_out: tuple[int, ...] = ()
    seed: int = 0
    tune_frames: bool = False
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    histogram_bins: int = 40
    # "antialiased" (gsplat's name; opacity compensated for the 0.3 px screen-space dilation):
    # with "classic", Gaussians shrunk below a pixel of the training frames still cover it
    # through the dilation, and seen larger than that they leave holes (frown_turn, 300
    # iterations at 192 px: 9% of the face see-through at 384 px, 0.03% antialiased).
    rasterize_mode: str = "antialiased"
    # The face's skin stays a closed surface: its Gaussians keep at least the opacity and
    # SKIN_MIN_SCALE of each scale they started with (skin_floor). Free, refinement made some
    # transparent and shrank others to draw the hair strands and shadows of its frames with the
    # hair and background behind the face, and from other views those holes were a network of
    # dark cracks across the cheeks.
    keep_skin_closed: bool = True


SKIN_MIN_SCALE = 0.85  # of each scale a skin Gaussian started with (RefineConfig.keep_skin_closed)


@dataclass
class SkinFloor:
    """The least opacity logit (M,) and log scales (M, 3) of the skin's Gaussians index (M,)."""

    index: torch.Tensor
    opacity_logit: torch.Tensor
    log_scale: torch.Tensor

    def apply(self, params: dict[str, torch.Tensor]) -> None:
        """In place: the skin's parameters raised to their floor (a projection after each step)."""
        for name in ("opacity_logit", "log_scale"):
            p = params[name].data
            p[self.index] = torch.maximum(p[self.index], getattr(self, name))


def skin_floor(face: torch.Tensor, opacity_logit: torch.Tensor, log_scale: torch.Tensor, data: HeadModelData,
               max_log_scale: float) -> SkinFloor | None:
    """The floor of the Gaussians bound (face: (N,) their faces) to the head model's "face"
    region (its skin, without the eyes and the mouth's inside): their opacity logits (N,) as they
    are, and SKIN_MIN_SCALE of their scales (log_scale: (N, 3)) but never over max_log_scale (a
    Gaussian that starts as a spike must still be able to shrink to what the size penalty
    allows); on the tensors' device. None where the model has no such region."""
    labels, names = data.face_regions()
    if "face" not in names:
        return None
    index = torch.nonzero(torch.as_tensor(labels == names.index("face"), device=face.device)[face]).flatten()
    scale = (log_scale.detach()[index] + math.log(SKIN_MIN_SCALE)).clamp(max=max_log_scale)
    return SkinFloor(index, opacity_logit.detach()[index].clone(), scale)


@dataclass
class Report:
    """Live statistics after `iteration` steps. losses: term -> value (l1, dssim, anisotropy,
    size, offset, total; averaged since the last report); psnr_mask: mean held-out PSNR in dB
    inside the frames' head masks (None without held-out frames); stats: per anti-spike quantity; event: what the guard did, if
    anything."""

    iteration: int
    iterations: int
    losses: dict[str, float]
    psnr_mask: float | None
    it_per_s: float
    eta_s: float
    elapsed_s: float
    lr_scale: float
    stats: dict[str, QuantityStats]
    event: str | None = None

    @property
    def spike_fraction(self) -> float:
        """Largest fraction over threshold among the three quantities."""
        return max((s.fraction_over for s in self.stats.values()), default=0.0)

    def to_json(self) -> dict:
        return asdict(self)


class Refiner:
    """Refines `avatar` (not modified; read the result with `current_avatar()`) against
    `frames`. head: a Rig or the HeadModel the avatar is bound to. output: where checkpoints go
    (.h5), or None.

    step() runs one iteration; run(callback) loops until done or stop(), honouring pause() and
    resume() from other threads, and calls callback(Report) every report_every iterations, on
    guard events and at the end.
    """

    def __init__(self, avatar: GaussianAvatar, head, frames: Sequence[Frame], config: RefineConfig | None = None,
                 output: str | Path | None = None):
        self.config = cfg = config or RefineConfig()
        self.model: HeadModel = getattr(head, "model", head)
        self.source = avatar
        self.output = None if output is None else Path(output)
        self.backend = resolve_backend(cfg.backend)
        # gsplat renders on the GPU: parameters, optimizer state, posed meshes and targets live
        # there too (one copy in, none per step); checkpoints and results come back to the CPU.
        self.device = torch.device("cuda") if self.backend == "gsplat" else torch.device("cpu")
        if self.device.type != "cpu":
            self.model = copy.deepcopy(self.model).to(self.device)  # the caller's stays where it is
        self.frames = list(frames)
        held = sorted(set(cfg.held_out))
        if any(not 0 <= i < len(self.frames) for i in held):
            raise ValueError(f"held-out indices {held} outside 0..{len(self.frames) - 1}")
        self.held_out = held
        self.train = [i for i in range(len(self.frames)) if i not in held]
        if not self.train:
            raise ValueError("no training frames (all are held out)")
        dev = self.device
        self.face = avatar.face.clone().to(dev)
        self._bound_face = avatar.face.to(dev)  # what check_layout compares with, on the same device
        self.count = len(avatar)
        self.params = {k: torch.nn.Parameter(getattr(avatar, k).detach().clone().float().to(dev)) for k in PARAMS}
        self._skin = None
        if cfg.keep_skin_closed:
            size_hinge = math.log(cfg.antispike.max_size * PENALTY_MARGIN)
            self._skin = skin_floor(self.face, self.params["opacity_logit"], self.params["log_scale"], self.model.data,
                                    size_hinge)
        self.frame_delta: dict[str, torch.nn.Parameter] = {}
        if cfg.tune_frames:
            n = len(self.frames)
            self.frame_delta = {"expr": torch.nn.Parameter(torch.zeros(n, len(self.frames[0].expr), device=dev)),
                                "pose": torch.nn.Parameter(torch.zeros(n, 15, device=dev))}
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
        self._targets = [self._matted_target(f) for f in self.frames]
        # Posed vertices are fixed unless frames are tuned: compute them once, not per step.
        self._verts = [self._vertices(f) for f in self.frames]
        self.lr_scale = 1.0
        self.iteration = 0
        self.optimizer = torch.optim.Adam(self._groups(), eps=1e-15)
        self._gen = np.random.default_rng(cfg.seed)
        self._order: list[int] = []
        self.loss_history: list[float] = []
        self._recent: deque[float] = deque(maxlen=50)
        self._sums: dict[str, float] = {}
        self._sum_count = 0
        self._good: dict | None = None
        self._save_good()
        self.last_report: Report | None = None
        self.events: list[str] = []
        self.pre_step_hooks: list[Callable[["Refiner"], None]] = []
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._t_last = time.perf_counter()
        self._it_last = 0
        self._t_start = self._t_last
        self._rate = 0.0

    # --- parameters and schedule -------------------------------------------------------------

    def _groups(self) -> list[dict]:
        cfg, p = self.config, self.params
        groups = [{"params": [p["mean"]], "name": "mean", "base_lr": cfg.lr_mean},
                  {"params": [p["rot"]], "name": "rot", "base_lr": cfg.lr_rot},
                  {"params": [p["log_scale"]], "name": "log_scale", "base_lr": cfg.lr_log_scale},
                  {"params": [p["opacity_logit"]], "name": "opacity_logit", "base_lr": cfg.lr_opacity},
                  {"params": [p["sh"]], "name": "sh", "base_lr": cfg.lr_sh}]
        groups += [{"params": [t], "name": f"frame_{k}", "base_lr": cfg.lr_frame} for k, t in self.frame_delta.items()]
        for g in groups:
            g["lr"] = g["base_lr"]
        return groups

    def _set_lrs(self) -> None:
        cfg = self.config
        t = min(self.iteration / max(cfg.iterations, 1), 1.0)
        for g in self.optimizer.param_groups:
            lr = g["base_lr"]
            if g["name"] == "mean":
                # 3DGS: log-linear from the initial to the final rate over the run.
                lr = math.exp((1 - t) * math.log(cfg.lr_mean) + t * math.log(cfg.lr_mean_final))
            g["lr"] = lr * self.lr_scale

    def _sh_grad_scale(self) -> None:
        """Higher SH bands learn 20x slower than the DC term (3DGS's feature_rest rate)."""
        g = self.params["sh"].grad
        if g is not None and g.shape[1] > 1:
            g[:, 1:] /= 20.0

    def current_avatar(self) -> GaussianAvatar:
        """The refined avatar (detached copies), with the source's identity and metadata."""
        s = self.source
        values = {k: v.detach().cpu().clone() for k, v in self.params.items()}
        return GaussianAvatar(face=s.face.clone(), head_model=s.head_model, shape=s.shape,
                              static_offset=s.static_offset, default_expr=s.default_expr,
                              metadata=dict(s.metadata), **values)

    def _live(self) -> GaussianAvatar:
        """Avatar view on the live parameters (for deform and penalties, with gradients)."""
        s = self.source
        return GaussianAvatar(face=self.face, head_model=s.head_model, shape=s.shape,
                              static_offset=s.static_offset, default_expr=s.default_expr, **self.params)

    def _vertices(self, f: Frame, index: int | None = None) -> torch.Tensor:
        """(V, 3) posed mesh for a frame; with gradients into the frame's correction if tuned."""
        dev = self.device
        expr, pose = f.expr.float().to(dev), f.pose.float().to(dev)
        if index is not None and self.frame_delta:
            expr = expr + self.frame_delta["expr"][index]
            pose = pose + self.frame_delta["pose"][index]
        with torch.set_grad_enabled(index is not None and bool(self.frame_delta)):
            out = self.model(shape=self.source.shape[None].to(dev), expr=expr[None], pose=pose[None],
                             translation=f.translation.float()[None].to(dev),
                             static_offset=self.source.static_offset.to(dev))
        return out.vertices[0]

    def check_layout(self) -> None:
        """Raise LayoutError when any attribute's count or the binding changed."""
        for k, p in self.params.items():
            if p.shape[0] != self.count:
                raise LayoutError(f"{k} has {p.shape[0]} Gaussians, the avatar had {self.count}: "
                                  "refinement must not densify or prune")
        if self.face.shape[0] != self.count or not torch.equal(self.face, self._bound_face):
            raise LayoutError("the face binding changed during refinement")

    # --- one iteration -----------------------------------------------------------------------

    def _next_frame(self) -> int:
        if not self._order:
            self._order = list(self._gen.permutation(self.train))
        return int(self._order.pop())

    def _render(self, index: int, grad: bool) -> torch.Tensor:
        f = self.frames[index]
        verts = self._vertices(f, index) if (grad and self.frame_delta) else self._verts[index]
        g = deform(self._live(), verts, self.model.faces)
        out = render(g, f.viewmat.float().to(self.device), f.K.float().to(self.device), f.width, f.height,
                     self.background, backend=self.backend, rasterize_mode=self.config.rasterize_mode)
        return out.rgb

    def _matted_target(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(target (H, W, 3), mask (H, W, 1) or None) on the refiner's device. Outside the mask
        the target shows the render background, not the frame's own: the real background is
        nothing the avatar draws, and SSIM windows at the mask's edge must not see it."""
        dev = self.background.device
        image = frame.image.float().to(dev)
        if frame.mask is None:
            return image, None
        m = frame.mask.float().reshape(frame.height, frame.width, 1).to(dev)
        return image * m + self.background * (1 - m), m

    def step(self) -> dict[str, float]:
        """One Adam step on one training frame; returns this step's loss terms. On a non-finite
        or exploding loss or parameter, rolls back instead (see _roll_back)."""
        for hook in self.pre_step_hooks:
            hook(self)
        cfg = self.config
        self.check_layout()
        self._set_lrs()
        index = self._next_frame()
        pred = self._render(index, grad=True)
        target, m = self._targets[index]
        if m is not None:
            # Matted like the target, on the same background: the difference is m x (render -
            # frame). Blended with the matted target instead, a pixel of person probability m
            # asked for m x frame + (1 - m) x background, and the face and neck under soft hair
            # edges turned transparent in speckles.
            pred = pred * m + self.background * (1 - m)
        l1 = (pred - target).abs().mean()
        dssim = 1 - ssim(pred, target)
        terms = {"l1": l1, "dssim": dssim}
        total = l1 + cfg.lambda_dssim * dssim
        pen = penalties(self._live(), cfg.antispike)
        for k, v in pen.items():
            terms[k] = v
            if cfg.regularize:
                total = total + v
        terms["total"] = total
        value = float(total.detach())
        self.optimizer.zero_grad(set_to_none=True)
        if math.isfinite(value):
            total.backward()
            self._sh_grad_scale()
            self.optimizer.step()
        with torch.no_grad():
            self.params["rot"].data = F.normalize(self.params["rot"].data, dim=1)
            if self._skin is not None:
                self._skin.apply(self.params)
        self.iteration += 1
        out = {k: float(v.detach()) for k, v in terms.items()}
        problem = self._problem(value)
        if problem:
            self._roll_back(problem)
            return out
        self.loss_history.append(value)
        self._recent.append(value)
        for k, v in out.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._sum_count += 1
        if self.iteration % cfg.good_state_every == 0:
            self._save_good()
        return out

    def _problem(self, value: float) -> str | None:
        if not math.isfinite(value):
            return f"non-finite loss ({value})"
        for k, p in list(self.params.items()) + list(self.frame_delta.items()):
            if not torch.isfinite(p).all():
                return f"non-finite {k}"
        # A minimum history: the first few losses of a run vary too much to judge a jump.
        if len(self._recent) >= 10 and value > self.config.divergence_factor * (sum(self._recent) / len(self._recent)):
            return f"loss {value:.4g} > {self.config.divergence_factor:g}x the running mean"
        return None

    def _save_good(self) -> None:
        self._good = {"params": {k: p.detach().clone() for k, p in self.params.items()},
                      "frame": {k: p.detach().clone() for k, p in self.frame_delta.items()},
                      "optim": copy.deepcopy(self.optimizer.state_dict()),
                      "iteration": self.iteration}

    def _roll_back(self, problem: str) -> None:
        """Restore the last good parameters and Adam moments and halve every learning rate. The
        iteration count keeps going so the run still ends when planned."""
        good = self._good
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(good["params"][k])
            for k, p in self.frame_delta.items():
                p.copy_(good["frame"][k])
        self.optimizer.load_state_dict(copy.deepcopy(good["optim"]))
        self.lr_scale *= 0.5
        self.events.append(f"iteration {self.iteration}: {problem}; rolled back to iteration "
                           f"{good['iteration']}, learning rates x{self.lr_scale:g}")

    # --- reports, checkpoints, control --------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, indices: Sequence[int] | None = None) -> float | None:
        """Mean PSNR (dB) over the held-out frames (or the frames at `indices`), each inside its
        mask (the whole image for a frame without one), None without any frames."""
        indices = self.held_out if indices is None else list(indices)
        if not indices:
            return None
        return float(np.nanmean([psnr(self._render(i, grad=False).clamp(0, 1), *self._targets[i]) for i in indices]))

    def stats(self) -> dict[str, QuantityStats]:
        return statistics(self._live(), self.config.antispike, bins=self.config.histogram_bins)

    def report(self, event: str | None = None) -> Report:
        now = time.perf_counter()
        done = self.iteration - self._it_last
        if done > 0:
            self._rate = done / max(now - self._t_last, 1e-9)
        self._t_last, self._it_last = now, self.iteration
        if self._sum_count:
            losses = {k: v / self._sum_count for k, v in self._sums.items()}
        else:  # no step since the last report (e.g. the final one right after a periodic one)
            losses = dict(self.last_report.losses) if self.last_report else {}
        self._sums, self._sum_count = {}, 0
        left = max(self.config.iterations - self.iteration, 0)
        r = Report(self.iteration, self.config.iterations, losses, self.evaluate(), self._rate,
                   left / self._rate if self._rate > 0 else float("inf"), now - self._t_start,
                   self.lr_scale, self.stats(), event)
        self.last_report = r
        return r

    def checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the current avatar with its refinement history atomically to path (default:
        the output given to the constructor). Until the run is complete the file also carries
        the resume state (Adam's moments, per-frame corrections, the frame sampler), so that
        resume_from continues exactly where it stopped; the finished avatar leaves it out (it
        would triple the file)."""
        from savatar.core.io.avatar_file import save_avatar

        path = Path(path or self.output)
        avatar = self.current_avatar()
        stats = self.stats()
        avatar.metadata["refinement"] = {
            "iterations": self.iteration,
            "losses": np.asarray(self.loss_history, np.float32),
            "stats": {"lr_scale": self.lr_scale, "events": list(self.events),
                      "antispike": {k: asdict(v) for k, v in stats.items()}},
        }
        if self.iteration < self.config.iterations:
            avatar.metadata["refinement"]["resume"] = self.resume_state()
        save_avatar(avatar, path)
        return path

    def resume_state(self) -> dict:
        """What a checkpoint needs beyond the Gaussians to continue bit for bit: per optimized
        tensor `name` -> {"step": int, "exp_avg": array, "exp_avg_sq": array} (Adam), "frame"
        -> {"expr": (T, E), "pose": (T, 15)} corrections when frames are tuned, and "sampler"
        (a JSON-able dict: the frame-order generator's state and the frames left this epoch)."""
        optim: dict[str, dict] = {}
        for group in self.optimizer.param_groups:
            st = self.optimizer.state.get(group["params"][0])
            if st:
                optim[group["name"]] = {"step": int(st["step"]), "exp_avg": st["exp_avg"].detach().cpu().numpy().copy(),
                                        "exp_avg_sq": st["exp_avg_sq"].detach().cpu().numpy().copy()}
        return {"optimizer": optim,
                "frame": {k: p.detach().cpu().numpy().copy() for k, p in self.frame_delta.items()},
                "sampler": {"generator": self._gen.bit_generator.state, "order": [int(i) for i in self._order]}}

    def _load_resume_state(self, state: dict) -> None:
        shapes = {g["name"]: tuple(g["params"][0].shape) for g in self.optimizer.param_groups}
        for name, st in state.get("optimizer", {}).items():
            if shapes.get(name) != tuple(np.shape(st["exp_avg"])):
                raise ValueError(f"resume state for {name!r} has shape {np.shape(st['exp_avg'])}, "
                                 f"expected {shapes.get(name)}")
        with torch.no_grad():
            for k, arr in state.get("frame", {}).items():
                if k in self.frame_delta and self.frame_delta[k].shape == arr.shape:
                    self.frame_delta[k].copy_(torch.from_numpy(np.asarray(arr)))  # copy_ crosses devices
        for group in self.optimizer.param_groups:
            st = state.get("optimizer", {}).get(group["name"])
            if st:
                self.optimizer.state[group["params"][0]] = {
                    "step": torch.tensor(float(st["step"])),
                    "exp_avg": torch.from_numpy(np.array(st["exp_avg"], np.float32)).to(self.device),
                    "exp_avg_sq": torch.from_numpy(np.array(st["exp_avg_sq"], np.float32)).to(self.device)}
        sampler = state.get("sampler")
        if sampler:
            self._gen.bit_generator.state = sampler["generator"]
            self._order = [int(i) for i in sampler["order"] if int(i) in self.train]

    def resume_from(self, path: str | Path) -> None:
        """Continue from a checkpoint: its Gaussians, iteration count, loss history, learning
        rate scale and, when the checkpoint has them, Adam's moments and the frame sampler (an
        unfinished run's checkpoints do: the continuation is then the same as an uninterrupted
        run). From a finished avatar, Adam restarts from zero moments."""
        from savatar.core.io.avatar_file import load_avatar

        a = load_avatar(path)
        if len(a) != self.count or not torch.equal(a.face, self.source.face):
            raise LayoutError(f"{path}: the checkpoint's binding differs from the avatar being refined")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(getattr(a, k))
        ref = a.metadata.get("refinement") or {}
        self.iteration = int(ref.get("iterations", 0))
        self.loss_history = [float(x) for x in ref.get("losses", [])]
        self.lr_scale = float((ref.get("stats") or {}).get("lr_scale", 1.0))
        self.events = list((ref.get("stats") or {}).get("events", []))
        self.optimizer = torch.optim.Adam(self._groups(), eps=1e-15)
        if ref.get("resume"):
            self._load_resume_state(ref["resume"])
        self._recent.extend(self.loss_history[-self._recent.maxlen:])
        self._it_last = self.iteration
        self._save_good()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def restart_clock(self) -> None:
        """Paused (or suspended) time is not refinement time: measure the rate from now on."""
        self._t_last, self._it_last = time.perf_counter(), self.iteration

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def run(self, callback: Callable[[Report], None] | None = None) -> Report:
        """Iterate until config.iterations or stop(); returns the last report. Checkpoints go to
        `output` every checkpoint_every iterations and at the end (also after stop())."""
        cfg = self.config
        emit = callback or (lambda r: None)
        self._t_last, self._it_last = time.perf_counter(), self.iteration
        seen_events = len(self.events)
        while self.iteration < cfg.iterations and not self._stop.is_set():
            if not self._running.is_set():
                self._running.wait()
                self.restart_clock()
                continue
            self.step()
            if len(self.events) > seen_events:
                emit(self.report("; ".join(self.events[seen_events:])))
                seen_events = len(self.events)
            elif self.iteration % cfg.report_every == 0:
                emit(self.report())
            if self.output is not None and cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                self.checkpoint()
        final = self.report("stopped" if self._stop.is_set() and self.iteration < cfg.iterations else None)
        emit(final)
        if self.output is not None:
            self.checkpoint()
        return final


def report_line(r: Report) -> dict[str, str]:
    """Short postfix fields for a progress bar."""
    return {"loss": f"{r.losses.get('total', float('nan')):.4f}",
            "psnr_mask": "-" if r.psnr_mask is None else f"{r.psnr_mask:.2f}",
            "spikes": f"{100 * r.spike_fraction:.2f}%"}


def report_json(r: Report) -> str:
    return json.dumps(r.to_json(), allow_nan=True)
