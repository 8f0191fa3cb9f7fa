"""OpenGL Gaussian splatting (the `gl` backend): instanced quads, a per-frame depth sort on the
CPU, front-to-back blending into float targets. Matches savatar.core.rasterize_cpu (design.md)
up to the early stop at transmittance 1e-4 and float rounding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import moderngl
import numpy as np
import torch

from savatar.core.camera import GL_FAR, GL_NEAR, Camera
from savatar.core.gaussians import WorldGaussians
from savatar.core.sh import camera_center, sh_to_rgb
from savatar.gl.context import headless_context, program

EPS2D = 0.3
_INSTANCE_FLOATS = 14  # mean 3, quat 4, scale 3, rgb 3, opacity 1


@dataclass
class SplatImage:
    """rgb: (H, W, 3) over the background; alpha: (H, W, 1); depth: (H, W, 1) expected depth."""

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


def instance_data(g: WorldGaussians, camera: Camera, sh_degree: int | None = None,
                  front_to_back: bool = True, keep: np.ndarray | None = None) -> np.ndarray:
    """Per-Gaussian rows (M, 14) sorted near to far (or far to near), Gaussians behind the
    camera (or outside the optional keep mask (N,)) dropped. Colours are the SH evaluated
    towards this camera."""
    with torch.no_grad():
        viewmat = torch.as_tensor(camera.viewmat, dtype=g.means.dtype)
        rgb = sh_to_rgb(g.sh, g.means, camera_center(viewmat), sh_degree)
        table = torch.cat([g.means, g.quats, g.scales, rgb, g.opacities[:, None]], 1).float().numpy()
    depth = table[:, :3] @ camera.viewmat[2, :3].astype(np.float32) + np.float32(camera.viewmat[2, 3])
    visible = depth >= 0.01
    if keep is not None:
        visible &= keep
    keep = np.flatnonzero(visible)
    order = keep[np.argsort(depth[keep], kind="stable")]
    return np.ascontiguousarray(table[order if front_to_back else order[::-1]])


class SplatRenderer:
    """Draws WorldGaussians with one instanced draw call.

    render(g, camera, background) -> SplatImage offscreen; draw_to_screen(...) for a window.
    """

    def __init__(self, ctx: moderngl.Context | None = None):
        self.ctx = ctx or headless_context()
        self.prog = program(self.ctx, "splat.vert", "splat.frag")
        self.composite = program(self.ctx, "composite.vert", "composite.frag")
        corners = np.array([-1, -1, 1, -1, -1, 1, 1, 1], np.float32)
        self.quad = self.ctx.buffer(corners.tobytes())
        self.instances = self.ctx.buffer(reserve=_INSTANCE_FLOATS * 4 * 1024, dynamic=True)
        self.vao = self._vertex_array()
        self.empty_vao = self.ctx.vertex_array(self.composite, [])
        self._targets: dict[tuple, tuple] = {}
        self.count = 0

    def _vertex_array(self) -> moderngl.VertexArray:
        return self.ctx.vertex_array(self.prog, [
            (self.quad, "2f", "corner"),
            (self.instances, "3f 4f 3f 4f/i", "i_mean", "i_quat", "i_scale", "i_color"),
        ])

    def upload(self, g: WorldGaussians, camera: Camera, sh_degree: int | None = None,
               front_to_back: bool = True, keep: np.ndarray | None = None) -> None:
        """Sort for this camera and upload: front to back for render(), back to front for
        draw_to(); keep (N,) bool optionally limits what is drawn."""
        data = instance_data(g, camera, sh_degree, front_to_back, keep)
        if data.nbytes > self.instances.size:
            self.instances.orphan(max(data.nbytes, 2 * self.instances.size))
        if len(data):
            self.instances.write(data.tobytes())
        self.count = len(data)

    def _set_uniforms(self, camera: Camera, scale_modifier: float) -> None:
        K, w, h = camera.K, camera.width, camera.height
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        self.prog["viewmat"].write(camera.viewmat.T.astype(np.float32).tobytes())
        self.prog["intrinsics"].value = (fx, fy, cx, cy)
        self.prog["image_size"].value = (w, h)
        # Same clamp as gsplat: 1.3x the half field of view, measured from the principal point.
        tx, ty = 0.5 * w / fx, 0.5 * h / fy
        self.prog["limits"].value = ((w - cx) / fx + 0.3 * tx, cx / fx + 0.3 * tx, (h - cy) / fy + 0.3 * ty, cy / fy + 0.3 * ty)
        self.prog["scale_modifier"].value = scale_modifier
        self.prog["eps2d"].value = EPS2D
        self.prog["clip_range"].value = (GL_NEAR, GL_FAR)

    def _target(self, size: tuple[int, int], exact: bool) -> tuple:
        """(colour texture, depth texture or None, framebuffer). exact: float32 colour plus the
        depth attachment (offscreen renders, tests); else half floats and colour only, half
        the memory traffic for the window."""
        key = (size, exact)
        if key not in self._targets:
            for old in [k for k in self._targets if k[1] == exact]:
                for obj in self._targets.pop(old):
                    if obj is not None:
                        obj.release()
            color = self.ctx.texture(size, 4, dtype="f4" if exact else "f2")
            depth = self.ctx.texture(size, 4, dtype="f4") if exact else None
            self._targets[key] = (color, depth, self.ctx.framebuffer([color] + ([depth] if depth else [])))
        return self._targets[key]

    def _accumulate(self, camera: Camera, scale_modifier: float, exact: bool) -> tuple:
        targets = self._target((camera.width, camera.height), exact)
        fbo = targets[2]
        fbo.use()
        self.ctx.viewport = (0, 0, camera.width, camera.height)
        fbo.clear(0.0, 0.0, 0.0, 0.0)
        self._set_uniforms(camera, scale_modifier)
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
        self.upload(g, camera, sh_degree)
        color, depth, _ = self._accumulate(camera, scale_modifier, exact=True)
        h, w = camera.height, camera.width
        acc = np.frombuffer(color.read(), np.float32).reshape(h, w, 4)[::-1]
        dep = np.frombuffer(depth.read(), np.float32).reshape(h, w, 4)[::-1]
        alpha = acc[..., 3:4]
        rgb = acc[..., :3] + (1 - alpha) * np.asarray(background, np.float32)
        depth = np.where(alpha > 0, dep[..., :1] / np.maximum(alpha, 1e-12), 0.0)
        return SplatImage(rgb.copy(), alpha.copy(), depth.astype(np.float32))

    def draw_to(self, target: moderngl.Framebuffer, camera: Camera, background=(1.0, 1.0, 1.0),
                scale_modifier: float = 1.0, occluder: Callable[[], None] | None = None) -> None:
        """Draw the last upload(..., front_to_back=False) straight into target (e.g. the window),
        back to front with premultiplied "over" blending. 8-bit targets and no float
        accumulation pass: llvmpipe blends float targets several times slower.

        occluder, when given, draws opaque geometry into the depth buffer only (e.g. the head
        mesh shrunk a little inside the avatar); splat fragments behind it are rejected by the
        depth test before shading, which saves the fill of everything hidden behind the face.
        """
        target.use()
        self.ctx.viewport = (0, 0, camera.width, camera.height)
        target.clear(*background, 1.0, depth=1.0)
        self.ctx.disable(moderngl.CULL_FACE)
        if occluder is not None:
            target.color_mask = (False, False, False, False)
            target.depth_mask = True
            occluder()
            target.color_mask = (True, True, True, True)
            self.ctx.enable(moderngl.DEPTH_TEST)
        else:
            self.ctx.disable(moderngl.DEPTH_TEST)
        target.depth_mask = False
        self._set_uniforms(camera, scale_modifier)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = (moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA, moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA)
        if self.count:
            self.vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=self.count)
        self.ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST)
        target.depth_mask = True
