"""Keeping two OpenGL windows apart in one thread.

Dear PyGui makes its GLFW context current once, when its viewport is shown, and then draws
into whatever context is current; pyglet switches to its own context for the stage. So the
console's context is captured right after it is shown and made current again before every
console frame. X11/GLX only (our machines); elsewhere this is a no-op."""
from __future__ import annotations

import ctypes
import ctypes.util


class SavedContext:
    def __init__(self) -> None:
        self._lib = None
        name = ctypes.util.find_library("GL") or "libGL.so.1"
        try:
            lib = ctypes.CDLL(name)
            lib.glXGetCurrentContext.restype = ctypes.c_void_p
            lib.glXGetCurrentDisplay.restype = ctypes.c_void_p
            lib.glXGetCurrentDrawable.restype = ctypes.c_ulong
            lib.glXMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
        except (OSError, AttributeError):
            return
        self._display = lib.glXGetCurrentDisplay()
        self._drawable = lib.glXGetCurrentDrawable()
        self._context = lib.glXGetCurrentContext()
        if self._display and self._context:
            self._lib = lib

    @property
    def captured(self) -> bool:
        return self._lib is not None

    def make_current(self) -> None:
        if self._lib is not None:
            self._lib.glXMakeCurrent(self._display, self._drawable, self._context)


def release_egl_context() -> None:
    """Un-make any EGL context current on this thread (e.g. a headless renderer's): with
    libglvnd a thread cannot make a GLX context current while an EGL one is."""
    try:
        egl = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
    except OSError:
        return
    egl.eglGetCurrentContext.restype = ctypes.c_void_p
    egl.eglGetCurrentDisplay.restype = ctypes.c_void_p
    egl.eglMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    if egl.eglGetCurrentContext():
        egl.eglMakeCurrent(egl.eglGetCurrentDisplay(), None, None, None)
