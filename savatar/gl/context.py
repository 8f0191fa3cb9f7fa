"""Creating moderngl contexts and reading shaders."""
from __future__ import annotations

from importlib import resources

import moderngl


class GLUnavailableError(RuntimeError):
    """No OpenGL 3.3 context could be made (no EGL/GL library or no driver)."""


def headless_context() -> moderngl.Context:
    """A standalone OpenGL 3.3 core context through EGL (works without a display, e.g. on CI)."""
    errors = []
    for backend in ("egl", None):
        try:
            kwargs = {"backend": backend} if backend else {}
            return moderngl.create_context(standalone=True, require=330, **kwargs)
        except Exception as exc:  # moderngl raises plain Exception subclasses per backend
            errors.append(f"{backend or 'default'}: {exc}")
    raise GLUnavailableError("no OpenGL 3.3 context: " + "; ".join(errors)
                             + " (install Mesa's EGL and GL libraries, e.g. libegl1 libgl1-mesa-dri)")


def shader_source(name: str) -> str:
    """Text of savatar/shaders/NAME."""
    return resources.files("savatar.shaders").joinpath(name).read_text()


def program(ctx: moderngl.Context, vertex: str, fragment: str) -> moderngl.Program:
    return ctx.program(vertex_shader=shader_source(vertex), fragment_shader=shader_source(fragment))
