"""What draws the avatar on the stage (Render panel backend, `savatar-viewer --stage-backend`).

- gl: OpenGL splatting (savatar.gl.splat_renderer) fed by CPU work per frame: deform, EWA
  projection, depth sort, instance upload. The viewer's own Stage draws it.
- cpu: savatar.core.render.api.render(backend="cpu"), the project's differentiable CPU
  rasterizer, at a quarter of the resolution while anything moves; its image reaches the window
  as a texture (savatar.gl.frame_texture), the same path as gsplat's.
- gsplat: the head model and the Gaussians live on the GPU, the avatar is deformed there and
  rasterized by gsplat.rasterization (through render(backend="gsplat")); the image goes to the
  texture by CUDA-GL interop when the GL context is on the same GPU, else by one device-to-host
  copy per frame into a pinned buffer.
- auto: gsplat when torch.cuda.is_available(), else gl.

gsplat's CUDA code is only ever reached after torch.cuda.is_available() (docs/conventions.md);
loading checks that and runs one tiny render (on a worker: the first use may compile gsplat's
extension), and any failure leaves the stage on gl with one line in the Log.

Refinement and the stage share the GPU through separate CUDA streams: the refiner's thread uses
its default stream, the stage a stream of its own with high priority. torch's pool streams do
not synchronize with the default stream, and the stage only ever waits for its own stream, so
neither blocks the other (the refiner hands its avatars over as CPU copies, so no tensor is
shared between the streams).
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from typing import Protocol

import numpy as np
import torch

from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians
from savatar.core.gaussians.rig import Rig
from savatar.core.render.api import render
from savatar.core.render.camera import Camera
from savatar.viewer.state import RenderSettings

STAGE_BACKENDS = ("auto", "gl", "gsplat", "cpu")
# Resolution while something moves, with the "auto" splat resolution: the CPU rasterizer's time
# grows with the pixels it fills (about 0.1-0.35 s a frame at 128-512 px for 30K Gaussians on
# our CPU), gl's half resolution is measured in bench viewer_loop, gsplat keeps full resolution.
MOVING_SCALE = {"gl": 0.5, "cpu": 0.25, "gsplat": 1.0}
# SH degree-0 coefficient that paints a Gaussian pure red after the +0.5 offset.
SPIKE_RED_SH0 = (1.77, -1.77, -1.77)


def resolve_stage_backend(name: str, cuda: bool | None = None) -> str:
    """"auto" -> "gsplat" with CUDA, else "gl"; other names as they are. cuda: whether a CUDA
    device is there (default: ask torch). ValueError for unknown names."""
    if name not in STAGE_BACKENDS:
        raise ValueError(f"unknown stage backend {name!r}; known: {', '.join(STAGE_BACKENDS)}")
    if name != "auto":
        return name
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return "gsplat" if cuda else "gl"


def stage_scale(settings: RenderSettings, moving: bool, backend: str) -> float:
    """Resolution scale of this frame: the panel's "full" or "half", else the backend's moving
    scale while something moves and full resolution when still."""
    if settings.quality in ("full", "half"):
        return settings.splat_scale(moving)
    return MOVING_SCALE.get(backend, 0.5) if moving else 1.0


def spikes_in_red(g: WorldGaussians, spikes: torch.Tensor) -> WorldGaussians:
    """g with the Gaussians flagged in spikes (N,) bool painted pure red (any device)."""
    sh = g.sh.clone()
    sh[spikes] = 0.0
    sh[spikes, 0] = torch.tensor(SPIKE_RED_SH0, dtype=sh.dtype, device=sh.device)
    return replace(g, sh=sh)


def gsplat_problem() -> str | None:
    """Why the gsplat stage cannot run here, checked without touching gsplat's CUDA code; None
    when it may (loading may still fail: check_gsplat)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def check_gsplat() -> None:
    """Import gsplat and draw two Gaussians with it on the GPU: the first call on a machine may
    compile gsplat's CUDA extension (minutes), so this runs on a worker. Raises what failed."""
    if gsplat_problem():
        raise RuntimeError(gsplat_problem())
    import gsplat  # noqa: F401  (a missing or broken install fails here, with its own message)

    dev = torch.device("cuda")
    g = WorldGaussians(means=torch.tensor([[0.0, 0.0, 1.0], [0.05, 0.0, 1.2]], device=dev),
                       quats=torch.tensor([[1.0, 0, 0, 0]] * 2, device=dev), scales=torch.full((2, 3), 0.02, device=dev),
                       opacities=torch.full((2,), 0.8, device=dev), sh=torch.zeros(2, 1, 3, device=dev))
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]], device=dev)
    out = render(g, torch.eye(4, device=dev), K, 16, 16, torch.ones(3, device=dev), backend="gsplat")
    if not torch.isfinite(out.rgb).all():
        raise RuntimeError("gsplat drew non-finite pixels")


class Transfer(Protocol):
    """How a frame gets from the rasterizer's device into the stage's texture."""

    label: str

    def present(self, pixels: torch.Tensor, texture) -> None: ...
    def release(self) -> None: ...


@dataclass
class Posed:
    """verts: (V, 3) posed mesh; world: the deformed Gaussians; both on the backend's device."""

    verts: torch.Tensor
    world: WorldGaussians


class StageClock:
    """Per-stage times of the frame being made: wall time on the CPU; on a CUDA stream, events
    read after the stream finished (the GPU's time, not the time it took to queue the work)."""

    def __init__(self, stream: torch.cuda.Stream | None = None):
        self.stream = stream
        self._marks: list[tuple[str, object]] = []

    def _now(self) -> object:
        if self.stream is None:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        return event

    def start(self) -> None:
        self._marks = [("", self._now())]

    def begin(self) -> None:
        """start() unless a frame is already being timed (posing started it)."""
        if not self._marks:
            self.start()

    def lap(self, name: str) -> None:
        """The time since the last mark counts as stage name."""
        if self._marks:
            self._marks.append((name, self._now()))

    def take(self) -> dict[str, float]:
        """{stage: ms} since start(); then empty until start()."""
        out: dict[str, float] = {}
        if self.stream is not None and self._marks:
            self._marks[-1][1].synchronize()  # elapsed_time needs both events done
        for (_, a), (name, b) in zip(self._marks, self._marks[1:]):
            out[name] = out.get(name, 0.0) + (a.elapsed_time(b) if self.stream is not None else (b - a) * 1e3)
        self._marks = []
        return out


def avatar_to(avatar: GaussianAvatar, device: torch.device) -> GaussianAvatar:
    """The avatar with every tensor on device (metadata as it is)."""
    return replace(avatar, **{f.name: getattr(avatar, f.name).to(device) for f in fields(avatar)
                              if isinstance(getattr(avatar, f.name), torch.Tensor)})


class ImageBackend:
    """Poses and rasterizes with render() on one torch device; frames become (H, W, 4) uint8
    images (rows top first) that the Stage shows through `transfer`.

    name: "cpu" or "gsplat" (also render()'s backend); stream: the CUDA stream all of the
    stage's GPU work goes on (None on the CPU)."""

    kind = "image"

    def __init__(self, name: str, device: torch.device, transfer: Transfer, stream: torch.cuda.Stream | None = None):
        self.name, self.device, self.transfer, self.stream = name, torch.device(device), transfer, stream
        self.clock = StageClock(stream)
        self._rig: Rig | None = None
        self._rig_key: tuple | None = None
        self._model_of: tuple[int, object] | None = None
        self._spikes: tuple[int, torch.Tensor] | None = None
        self._pixels: torch.Tensor | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.transfer.label})" if self.name == "gsplat" else self.name

    @property
    def uses_occlusion(self) -> bool:
        # Skipping Gaussians that face away saves the CPU rasterizer about a quarter of its
        # work; on the GPU the mask would cost a sync and gsplat does not need the saving.
        return self.device.type == "cpu"

    def _stream_context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def _device_rig(self, rig: Rig, version: int) -> Rig:
        """rig with its model and avatar on the device, uploaded once per avatar version."""
        if self.device.type == "cpu":
            return rig
        if self._rig_key != (id(rig), version):
            if self._model_of is None or self._model_of[0] != id(rig.model):
                self._model_of = (id(rig.model), copy.deepcopy(rig.model).to(self.device))
            self._rig = Rig(avatar_to(rig.avatar, self.device), self._model_of[1])
            self._rig_key = (id(rig), version)
        return self._rig

    def pose(self, rig: Rig, version: int, params: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Posed:
        """params (expr (E,), pose (15,), translation (3,)) -> the posed mesh and Gaussians on the device."""
        self.clock.start()
        with self._stream_context():
            verts, world = self._device_rig(rig, version).pose(*params)
        self.clock.lap("deform")
        return Posed(verts, world)

    def rasterize(self, world: WorldGaussians, camera: Camera, settings: RenderSettings,
                  spikes: np.ndarray | None, version: int, visible: torch.Tensor | None = None) -> torch.Tensor:
        """(H, W, 4) uint8 image of world for camera, on the device; spikes (N,) bool painted
        red when the settings ask; visible (N,) bool leaves the others out."""
        self.clock.begin()
        dev = self.device
        with self._stream_context(), torch.no_grad():
            g = world
            if settings.highlight_spikes and spikes is not None and spikes.any():
                if self._spikes is None or self._spikes[0] != version:
                    self._spikes = (version, torch.from_numpy(np.asarray(spikes, bool)).to(dev))
                g = spikes_in_red(g, self._spikes[1])
            if visible is not None:
                g = g.subset(visible.to(dev))
            if settings.scale_modifier != 1.0:
                g = replace(g, scales=g.scales * settings.scale_modifier)
            out = render(g, torch.as_tensor(camera.viewmat, dtype=torch.float32, device=dev),
                         torch.as_tensor(camera.K, dtype=torch.float32, device=dev), camera.width, camera.height,
                         torch.tensor(settings.background, dtype=torch.float32, device=dev), backend=self.name,
                         sh_degree=min(settings.sh_degree, g.sh_degree))
            self.clock.lap("raster")
            pixels = self._pixel_buffer(camera.height, camera.width)
            # Rounded to nearest (+0.5 before the truncating cast), as savatar.core.io.pixels.to_uint8.
            pixels[..., :3].copy_(out.rgb.clamp(0.0, 1.0).mul_(255.0).add_(0.5))
        return pixels

    def _pixel_buffer(self, h: int, w: int) -> torch.Tensor:
        """The persistent RGBA8 frame (alpha 255), remade when the size changes."""
        if self._pixels is None or self._pixels.shape[:2] != (h, w):
            self._pixels = torch.full((h, w, 4), 255, dtype=torch.uint8, device=self.device)
        return self._pixels

    def present(self, pixels: torch.Tensor, texture) -> None:
        """pixels into the stage's FrameTexture (main thread, GL context current)."""
        with self._stream_context():
            self.transfer.present(pixels, texture)
        self.clock.lap("transfer")

    def take_times(self) -> dict[str, float]:
        return self.clock.take()

    def host(self, t: torch.Tensor) -> np.ndarray:
        """t copied to host memory, ordered after the stage's own work (on its stream: on the
        default stream the copy could run before t is made, and would wait for a refinement)."""
        with self._stream_context():
            return t.cpu().numpy()

    def release(self) -> None:
        self.transfer.release()
        self._rig = self._model_of = self._pixels = None


class GLBackend:
    """OpenGL splatting: CPU deform here; the Stage projects, sorts, uploads and draws."""

    kind = "gl"
    name = label = "gl"
    device = torch.device("cpu")
    uses_occlusion = True

    def pose(self, rig: Rig, version: int, params: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Posed:
        verts, world = rig.pose(*params)
        return Posed(verts, world)

    def host(self, t: torch.Tensor) -> np.ndarray:
        return t.numpy()

    def release(self) -> None:
        return None


def cpu_backend() -> ImageBackend:
    from savatar.gl.frame_texture import HostTransfer

    return ImageBackend("cpu", torch.device("cpu"), HostTransfer())


def gsplat_backend(texture, probe_size: tuple[int, int]) -> tuple[ImageBackend, str | None]:
    """The gsplat stage on the current CUDA device (after check_gsplat passed), drawing into
    texture (the Stage's FrameTexture; GL context current). Returns the backend and, when
    CUDA-GL interop could not be set up, why (it then copies through pinned host memory)."""
    from savatar.gl.cuda_interop import InteropTransfer
    from savatar.gl.frame_texture import HostTransfer

    try:  # high priority: the stage's few kernels go ahead of a refinement's queued ones
        stream = torch.cuda.Stream(priority=-1)
    except (RuntimeError, TypeError):
        stream = torch.cuda.Stream()
    why = None
    try:
        transfer: Transfer = InteropTransfer(texture, stream, probe_size)
    except Exception as exc:  # interop is optional: any failure (InteropUnavailable, CUDA errors) means a copy
        transfer, why = HostTransfer(stream), str(exc)
    return ImageBackend("gsplat", torch.device("cuda", torch.cuda.current_device()), transfer, stream), why
