"""CUDA-GL interop: a CUDA image copied into a GL texture on the GPU, never through host memory.

Calls the CUDA runtime's C API through ctypes (the libcudart that a CUDA build of torch already
loaded), so it needs no package of its own. It works only when the GL context runs on the same
NVIDIA GPU as torch; anywhere else (software GL, another GPU, a CPU build of torch) creating a
link raises InteropUnavailable and the caller copies through the host instead
(savatar.gl.frame_texture.HostTransfer). Nothing here is called without CUDA.
"""
from __future__ import annotations

import ctypes
import glob
import os

import torch

from savatar.gl.frame_texture import FrameTexture

GL_TEXTURE_2D = 0x0DE1
REGISTER_WRITE_DISCARD = 2  # cudaGraphicsRegisterFlagsWriteDiscard: CUDA overwrites the whole texture
MEMCPY_DEVICE_TO_DEVICE = 3  # cudaMemcpyDeviceToDevice


class InteropUnavailable(RuntimeError):
    """No CUDA-GL interop here (the message says why)."""


def _library_candidates() -> list[str]:
    """Names and paths of the CUDA runtime matching torch's CUDA major version. By soname first:
    dlopen then returns the copy torch loaded (one runtime, one CUDA context)."""
    major = (torch.version.cuda or "").split(".")[0]
    if not major:
        raise InteropUnavailable("this torch is not a CUDA build")
    names = [f"libcudart.so.{major}", f"cudart64_{major}.dll", f"cudart64_{major}0.dll"]
    roots = [os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(torch.__file__))]
    for root in roots:
        for pattern in (f"lib/libcudart.so.{major}*", f"nvidia/cuda_runtime/lib/libcudart.so.{major}*",
                        f"nvidia/cu{major}/lib/libcudart.so.{major}*", f"lib/cudart64_{major}*.dll"):
            names += sorted(glob.glob(os.path.join(root, pattern)))
    return names


def _runtime() -> ctypes.CDLL:
    errors = []
    for name in _library_candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
            continue
        vp, size, uint = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint
        signatures = {
            "cudaGraphicsGLRegisterImage": (ctypes.POINTER(vp), uint, uint, uint),
            "cudaGraphicsMapResources": (ctypes.c_int, ctypes.POINTER(vp), vp),
            "cudaGraphicsUnmapResources": (ctypes.c_int, ctypes.POINTER(vp), vp),
            "cudaGraphicsSubResourceGetMappedArray": (ctypes.POINTER(vp), vp, uint, uint),
            "cudaMemcpy2DToArrayAsync": (vp, size, size, vp, size, size, size, ctypes.c_int, vp),
            "cudaGraphicsUnregisterResource": (vp,),
            "cudaGetErrorString": (ctypes.c_int,),
        }
        for fn, args in signatures.items():
            getattr(lib, fn).argtypes = list(args)
            getattr(lib, fn).restype = ctypes.c_int
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        return lib
    raise InteropUnavailable("no CUDA runtime library found (" + "; ".join(errors[-2:]) + ")")


class TextureLink:
    """A FrameTexture registered with CUDA. copy(pixels) writes a (H, W, 4) uint8 CUDA image of
    the texture's size into it, ordered on the given stream; the unmap at the end makes GL wait
    for that copy, so the caller may draw the texture right after, with no host sync."""

    def __init__(self, frame: FrameTexture, stream: torch.cuda.Stream):
        if not torch.cuda.is_available():
            raise InteropUnavailable("no CUDA device")
        torch.cuda.current_device()  # the primary context exists on this thread before registering
        self._lib = _runtime()
        self.frame, self.stream = frame, stream
        self._resource = ctypes.c_void_p()
        self._generation = -1

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            text = self._lib.cudaGetErrorString(code)
            raise InteropUnavailable(f"{what}: {text.decode() if text else code}")

    def _register(self, width: int, height: int) -> None:
        """(Re)register when the texture is (re)made (GL context current: the caller's); the old
        registration goes before the old texture does."""
        if self.frame.texture is None or self.frame.texture.size != (width, height):
            self._unregister()
        texture = self.frame.ensure(width, height)
        if self._generation == self.frame.generation:
            return
        self._unregister()
        self._check(self._lib.cudaGraphicsGLRegisterImage(ctypes.byref(self._resource), texture.glo, GL_TEXTURE_2D,
                                                          REGISTER_WRITE_DISCARD), "cudaGraphicsGLRegisterImage")
        self._generation = self.frame.generation

    def copy(self, pixels: torch.Tensor) -> None:
        """pixels (H, W, 4) uint8, contiguous, on the CUDA device."""
        h, w = pixels.shape[:2]
        self._register(w, h)
        stream = ctypes.c_void_p(self.stream.cuda_stream)
        self._check(self._lib.cudaGraphicsMapResources(1, ctypes.byref(self._resource), stream), "map")
        try:
            array = ctypes.c_void_p()
            self._check(self._lib.cudaGraphicsSubResourceGetMappedArray(ctypes.byref(array), self._resource, 0, 0),
                        "mapped array")
            self._check(self._lib.cudaMemcpy2DToArrayAsync(array, 0, 0, ctypes.c_void_p(pixels.data_ptr()), w * 4,
                                                           w * 4, h, MEMCPY_DEVICE_TO_DEVICE, stream), "copy")
        finally:
            self._check(self._lib.cudaGraphicsUnmapResources(1, ctypes.byref(self._resource), stream), "unmap")

    def _unregister(self) -> None:
        if self._resource.value:
            self._lib.cudaGraphicsUnregisterResource(self._resource)
            self._resource = ctypes.c_void_p()
        self._generation = -1

    def release(self) -> None:
        self._unregister()


class InteropTransfer:
    """The CUDA-GL path of a stage frame: pixels to the texture on the GPU (see TextureLink)."""

    label = "CUDA-GL interop"

    def __init__(self, frame: FrameTexture, stream: torch.cuda.Stream, probe_size: tuple[int, int]):
        """Registers the texture at probe_size (W, H) and copies one black frame through it, so
        an interop that cannot work here fails now (InteropUnavailable), not mid-session."""
        self.link = TextureLink(frame, stream)
        with torch.cuda.stream(stream):
            self.present(torch.zeros((probe_size[1], probe_size[0], 4), dtype=torch.uint8, device="cuda"), frame)

    def present(self, pixels: torch.Tensor, texture: FrameTexture) -> None:
        self.link.copy(pixels)
        # Keeps the main loop from queueing frames ahead of the GPU; waits for this stream only.
        self.link.stream.synchronize()

    def release(self) -> None:
        self.link.release()
