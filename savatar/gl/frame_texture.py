"""Images drawn by a rasterizer (the stage's `cpu` and `gsplat` backends) shown in a GL window:
one RGBA8 texture, written once per frame, stretched over the target by a full-screen triangle;
and the two ways a frame gets into it (HostTransfer: one copy from host memory; CUDA-GL interop:
savatar.gl.cuda_interop)."""
from __future__ import annotations

import moderngl
import numpy as np
import torch

from savatar.gl.context import program


class FrameTexture:
    """texture: RGBA8, rows stored top first (as rasterizers write them), remade when the frame
    size changes; generation grows with each remake (a CUDA registration of the old one is stale)."""

    def __init__(self, ctx: moderngl.Context):
        self.ctx = ctx
        self.prog = program(ctx, "composite.vert", "frame.frag")
        self.vao = ctx.vertex_array(self.prog, [])
        self.texture: moderngl.Texture | None = None
        self.generation = 0

    def ensure(self, width: int, height: int) -> moderngl.Texture:
        """The texture, (re)made at width x height."""
        if self.texture is None or self.texture.size != (width, height):
            if self.texture is not None:
                self.texture.release()
            self.texture = self.ctx.texture((width, height), 4, dtype="f1")
            # Bilinear: a frame drawn at lower resolution while moving is stretched smoothly; at
            # the target's own size every pixel centre hits a texel centre, so nothing blurs.
            self.texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
            self.texture.repeat_x = self.texture.repeat_y = False  # edges clamp, never blend with the opposite side
            self.generation += 1
        return self.texture

    def write(self, pixels: np.ndarray) -> None:
        """pixels (H, W, 4) uint8, C-contiguous, rows top first."""
        h, w = pixels.shape[:2]
        self.ensure(w, h).write(pixels)

    def draw(self, size: tuple[int, int]) -> None:
        """Stretch the texture over the bound framebuffer's (W, H) viewport (no blending)."""
        self.ctx.viewport = (0, 0, *size)
        self.texture.use(location=0)
        self.prog["image"].value = 0
        self.ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST)
        self.vao.render(moderngl.TRIANGLES, vertices=3)

    def release(self) -> None:
        if self.texture is not None:
            self.texture.release()
            self.texture = None


class HostTransfer:
    """One copy per frame from the rasterizer's device into a persistent host buffer (pinned
    when the pixels are on a CUDA device, so the copy is a plain DMA), then one texture write.
    stream: the CUDA stream the pixels were made on (None on the CPU); only it is waited for."""

    def __init__(self, stream: torch.cuda.Stream | None = None):
        self.stream = stream
        self.label = "pinned copy" if stream is not None else "host"
        self._host: torch.Tensor | None = None

    def present(self, pixels: torch.Tensor, texture: FrameTexture) -> None:
        """pixels (H, W, 4) uint8 contiguous, on the CPU or a CUDA device."""
        if pixels.device.type == "cpu":
            texture.write(pixels.numpy())  # already in host memory: no extra copy
            return
        if self._host is None or self._host.shape != pixels.shape:
            self._host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        self._host.copy_(pixels, non_blocking=True)
        self.stream.synchronize()  # this stream only: a refinement on another stream runs on
        texture.write(self._host.numpy())

    def release(self) -> None:
        self._host = None
