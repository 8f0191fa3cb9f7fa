"""Shaded triangle-mesh rendering (tests, `savatar render-mesh`, the viewer's mesh overlay)."""
from __future__ import annotations

import moderngl
import numpy as np

from savatar.core.head.mesh_ops import vertex_normals
from savatar.core.render.camera import Camera, gl_projection
from savatar.gl.context import headless_context, program


class MeshRenderer:
    """Draws one mesh with per-vertex colours into an offscreen framebuffer or the current one.

    faces: (F, 3) int; vertices given per draw as (V, 3) float; colors (V, 3) in [0, 1].
    """

    def __init__(self, faces: np.ndarray, colors: np.ndarray, ctx: moderngl.Context | None = None):
        self.ctx = ctx or headless_context()
        self.prog = program(self.ctx, "mesh.vert", "mesh.frag")
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        n = int(self.faces.max()) + 1
        self.vbo = self.ctx.buffer(reserve=n * 9 * 4, dynamic=True)
        self.ibo = self.ctx.buffer(self.faces.tobytes())
        self.set_colors(colors)
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")], self.ibo)
        self._fbo: moderngl.Framebuffer | None = None

    def set_colors(self, colors: np.ndarray) -> None:
        self.colors = np.asarray(colors, dtype=np.float32)

    def draw(self, vertices: np.ndarray, camera: Camera, opacity: float = 1.0) -> None:
        """Draw into the currently bound framebuffer (depth test on)."""
        v = np.asarray(vertices, dtype=np.float32)
        data = np.ascontiguousarray(np.concatenate([v, vertex_normals(v, self.faces), self.colors], 1))
        if data.nbytes != self.vbo.size:
            self.vbo.orphan(data.nbytes)
        self.vbo.write(data.tobytes())
        self.prog["viewmat"].write(camera.viewmat.T.astype(np.float32).tobytes())
        self.prog["proj"].write(gl_projection(camera.K, camera.width, camera.height).T.astype(np.float32).tobytes())
        self.prog["opacity"].value = opacity
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.vao.render(moderngl.TRIANGLES)

    def render(self, vertices: np.ndarray, camera: Camera, background=(1.0, 1.0, 1.0), samples: int = 4) -> np.ndarray:
        """Offscreen render -> (H, W, 3) float32 image in [0, 1]. samples > 1 multisamples."""
        size = (camera.width, camera.height)
        if self._fbo is None or self._fbo.size != size:
            self._release_fbo()
            self._ms = self.ctx.framebuffer(self.ctx.renderbuffer(size, samples=samples),
                                            self.ctx.depth_renderbuffer(size, samples=samples))
            self._fbo = self.ctx.framebuffer(self.ctx.renderbuffer(size))
        self._ms.use()
        self.ctx.viewport = (0, 0, *size)
        self._ms.clear(*background, 1.0)
        self.draw(vertices, camera)
        self.ctx.copy_framebuffer(self._fbo, self._ms)
        img = np.frombuffer(self._fbo.read(components=3), dtype=np.uint8).reshape(size[1], size[0], 3)
        return img[::-1].astype(np.float32) / 255.0

    def _release_fbo(self) -> None:
        if self._fbo is not None:
            self._fbo.release()
            self._ms.release()
            self._fbo = None
