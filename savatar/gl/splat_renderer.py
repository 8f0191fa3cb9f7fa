"""OpenGL Gaussian splatting (the `gl` backend): instanced quads, a per-frame depth sort on the
CPU, front-to-back blending into float targets. Matches savatar.core.render.rasterize_cpu and
gsplat's CUDA kernels (docs/conventions.md: opacity-aware support, alpha capped at 0.999) up to the early
stop at transmittance 1e-4 and float rounding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import moderngl
import numpy as np
import torch

from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.gaussians.sh import camera_center, sh_to_rgb
from savatar.core.render.camera import GL_FAR, GL_NEAR, Camera
from savatar.core.render.project_numpy import project
from savatar.gl.context import headless_context, program

_INSTANCE_FLOATS = 14
# GL snaps vertices to at least 4 subpixel bits (1/16 px); 1/8 px of margin around the support
# keeps every pixel centre of it inside the quad at little extra fill (the quads of small splats
# are only a few pixels across).
QUAD_MARGIN_PX = 0.125


@dataclass
class SplatImage:
    """rgb: (H, W, 3) over the background; alpha: (H, W, 1); depth: (H, W, 1) expected depth."""

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


def instance_data(g: WorldGaussians, camera: Camera, sh_degree: int | None = None,
                  front_to_back: bool = True, scale_modifier: float = 1.0) -> np.ndarray:
    """Per-splat rows (M, 14) = centre 2, conic 3, rgb + opacity 4, quad half axes 2 + 2,
    depth 1, sorted near to far (or far to near); splats with no support on screen dropped.
    Colours are the SH evaluated towards this camera."""
    with torch.no_grad():
        viewmat = torch.as_tensor(camera.viewmat, dtype=g.means.dtype)
        rgb = sh_to_rgb(g.sh, g.means, camera_center(viewmat), sh_degree).float().numpy()
    opacity = g.opacities.detach().float().numpy()
    s = project(g.means.detach().numpy(), g.quats.detach().numpy(), g.scales.detach().numpy() * scale_modifier,
                opacity, camera.viewmat, camera.K, camera.width, camera.height)
    # Depth order from 16-bit keys: numpy's stable sort is a radix sort on them, several times
    # faster than sorting floats; splats closer than 1/65535 of the depth range may swap, which
    # no one can see.
    keep = np.flatnonzero(s.valid)
    depth = s.depth[keep]
    if len(keep):
        lo, span = float(depth.min()), float(np.ptp(depth))
        key = ((depth - lo) * (65535.0 / max(span, 1e-12))).astype(np.uint16)
        order = keep[np.argsort(key if front_to_back else 65535 - key, kind="stable")]
    else:
        order = keep
    # One table for every splat, then one row gather: cheaper than gathering each field.
    table = np.empty((len(s.depth), _INSTANCE_FLOATS), np.float32)
    table[:, 0:2] = s.centre
    table[:, 2:5] = s.conic
    table[:, 5:8] = rgb
    table[:, 8] = opacity
    for col, axis in ((9, s.axis1), (11, s.axis2)):
        length = np.hypot(axis[:, 0], axis[:, 1])[:, None]
        # A little wider than the support so no pixel centre on its rim is lost to vertex
        # snapping or the coverage rule (the fragment shader does the exact test).
        table[:, col:col + 2] = axis * (1 + QUAD_MARGIN_PX / np.maximum(length, 1e-12))
    table[:, 13] = s.depth
    return table[order]


class SplatRenderer:
    """Draws WorldGaussians with one instanced draw call.

    render(g, camera, background) -> SplatImage offscreen; draw_to_screen(...) for a window.
    """

    def __init__(self, ctx: moderngl.Context | None = None):
        # A headless context of our own is made current for each offscreen render: another
        # context created in the process since (a second renderer, the CLI's) would otherwise
        # receive our draws and leave our framebuffers blank.
        self._own_context = ctx is None
        self.ctx = ctx or headless_context()
        self.prog = program(self.ctx, "splat.vert", "splat.frag")
        self.composite = program(self.ctx, "composite.vert", "composite.frag")
        corners = np.array([-1, -1, 1, -1, -1, 1, 1, 1], np.float32)
        self.quad = self.ctx.buffer(corners.tobytes())
        self.instances = self.ctx.buffer(reserve=_INSTANCE_FLOATS * 4 * 1024, dynamic=True)
        self.vao = self._vertex_array()
        self.empty_vao = self.ctx.vertex_array(self.composite, [])
        self._targets: dict[str, tuple] = {}
        self.count = 0

    def _vertex_array(self) -> moderngl.VertexArray:
        return self.ctx.vertex_array(self.prog, [
            (self.quad, "2f", "corner"),
            (self.instances, "2f 3f 4f 2f 2f 1f/i", "i_centre", "i_conic", "i_color", "i_axis1", "i_axis2", "i_depth"),
        ])

    def upload(self, g: WorldGaussians, camera: Camera, sh_degree: int | None = None,
               front_to_back: bool = True, scale_modifier: float = 1.0) -> None:
        """Project, sort for this camera and upload: front to back for render(), back to front
        for draw_to()."""
        data = instance_data(g, camera, sh_degree, front_to_back, scale_modifier)
        if data.nbytes > self.instances.size:
            self.instances.orphan(max(data.nbytes, 2 * self.instances.size))
        if len(data):
            self.instances.write(data.tobytes())
        self.count = len(data)

    def _set_uniforms(self, camera: Camera) -> None:
        self.prog["image_size"].value = (camera.width, camera.height)
        self.prog["clip_range"].value = (GL_NEAR, GL_FAR)

    def _cached_target(self, kind: str, size: tuple[int, int], make: Callable[[tuple[int, int]], tuple]) -> tuple:
        """One offscreen target per kind, remade when the size changes."""
        old = self._targets.get(kind)
        if old is None or old[0].size != size:
            for obj in old or ():
                obj.release()
            self._targets[kind] = make(size)
        return self._targets[kind]

    def _exact_target(self, size: tuple[int, int]) -> tuple:
        """float32 colour and expected-depth accumulation for offscreen renders and tests."""
        def make(sz):
            color, depth = self.ctx.texture(sz, 4, dtype="f4"), self.ctx.texture(sz, 4, dtype="f4")
            return color, depth, self.ctx.framebuffer([color, depth])
        return self._cached_target("exact", size, make)

    def _accumulate(self, camera: Camera) -> tuple:
        targets = self._exact_target((camera.width, camera.height))
        fbo = targets[2]
        fbo.use()
        self.ctx.viewport = (0, 0, camera.width, camera.height)
        fbo.clear(0.0, 0.0, 0.0, 0.0)
        self._set_uniforms(camera)
        self.ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = (moderngl.ONE_MINUS_DST_ALPHA, moderngl.ONE, moderngl.ONE_MINUS_DST_ALPHA, moderngl.ONE)
        if self.count:
            self.vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=self.count)
        self.ctx.disable(moderngl.BLEND)
        return targets

    def render(self, g: WorldGaussians, camera: Camera, background=(1.0, 1.0, 1.0),
               sh_degree: int | None = None, scale_modifier: float = 1.0) -> SplatImage:
        """Offscreen render read back as float arrays."""
        if self._own_context:
            with self.ctx:
                return self._render(g, camera, background, sh_degree, scale_modifier)
        return self._render(g, camera, background, sh_degree, scale_modifier)

    def _render(self, g: WorldGaussians, camera: Camera, background, sh_degree: int | None,
                scale_modifier: float) -> SplatImage:
        self.upload(g, camera, sh_degree, scale_modifier=scale_modifier)
        color, depth, _ = self._accumulate(camera)
        h, w = camera.height, camera.width
        acc = np.frombuffer(color.read(), np.float32).reshape(h, w, 4)[::-1]
        dep = np.frombuffer(depth.read(), np.float32).reshape(h, w, 4)[::-1]
        alpha = acc[..., 3:4]
        rgb = acc[..., :3] + (1 - alpha) * np.asarray(background, np.float32)
        depth = np.where(alpha > 0, dep[..., :1] / np.maximum(alpha, 1e-12), 0.0)
        return SplatImage(rgb.copy(), alpha.copy(), depth.astype(np.float32))

    def draw_to(self, target: moderngl.Framebuffer, camera: Camera, background=(1.0, 1.0, 1.0),
                occluder: Callable[[], None] | None = None, transparent: bool = False) -> None:
        """Draw the last upload(..., front_to_back=False) straight into target (e.g. the window),
        back to front with premultiplied "over" blending. 8-bit targets and no float
        accumulation pass: llvmpipe blends float targets several times slower.

        occluder, when given, draws opaque geometry into the depth buffer only (e.g. the head
        mesh shrunk a little inside the avatar); splat fragments behind it are rejected by the
        depth test before shading, which saves the fill of everything hidden behind the face.
        """
        def bind() -> None:
            target.use()
            self.ctx.viewport = (0, 0, camera.width, camera.height)

        bind()
        # transparent: premultiplied colour and coverage over nothing, composited later.
        target.clear(*((0.0, 0.0, 0.0, 0.0) if transparent else (*background, 1.0)), depth=1.0)
        self.ctx.disable(moderngl.CULL_FACE)
        if occluder is not None:
            # moderngl applies a framebuffer's masks when it is bound (and resets the viewport to
            # the framebuffer's own): rebind, viewport included, after each change.
            target.color_mask = (False, False, False, False)
            target.depth_mask = True
            bind()
            occluder()
            target.color_mask = (True, True, True, True)
            bind()
            self.ctx.enable(moderngl.DEPTH_TEST)
        else:
            self.ctx.disable(moderngl.DEPTH_TEST)
        target.depth_mask = False
        bind()
        self._set_uniforms(camera)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = (moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA, moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA)
        if self.count:
            self.vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=self.count)
        self.ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST)
        target.depth_mask = True
        bind()

    def draw_upscaled(self, target: moderngl.Framebuffer, low: Camera, size: tuple[int, int],
                      background=(1.0, 1.0, 1.0), occluder: Callable[[], None] | None = None) -> None:
        """Draw the last upload (made for the low-resolution camera `low`) into an offscreen
        target of low's size, then stretch it over target's size (W, H) with bilinear filtering
        and composite it over the background: a quarter of the fill at half resolution, for
        frames in motion."""
        def make(sz):
            color = self.ctx.texture(sz, 4)
            color.filter = (moderngl.LINEAR, moderngl.LINEAR)
            depth = self.ctx.depth_renderbuffer(sz)
            return color, depth, self.ctx.framebuffer([color], depth)

        color, _, fbo = self._cached_target("upscale", (low.width, low.height), make)
        self.draw_to(fbo, low, background, occluder, transparent=True)
        target.use()
        self.ctx.viewport = (0, 0, *size)
        color.use(location=0)
        self.composite["accum"].value = 0
        self.composite["background"].value = tuple(float(c) for c in background)
        self.empty_vao.render(moderngl.TRIANGLES, vertices=3)
