"""The texture path of the image stage backends (savatar.gl.frame_texture): a frame written from
host memory comes out of the window unchanged and the right way up, a smaller one is stretched
over it, and the CUDA-GL interop refuses cleanly where there is no CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from savatar.gl.context import headless_context
from savatar.gl.frame_texture import FrameTexture, HostTransfer


@pytest.fixture(scope="module")
def ctx():
    return headless_context()


def read_through(ctx, frame: FrameTexture, size: tuple[int, int]) -> np.ndarray:
    """What frame.draw puts into a (W, H) RGBA8 target, as an image (H, W, 3), rows top first."""
    fbo = ctx.framebuffer([ctx.renderbuffer(size)])
    fbo.use()
    frame.draw(size)
    w, h = size
    out = np.frombuffer(fbo.read(components=3), np.uint8).reshape(h, w, 3)[::-1]
    fbo.release()
    return out


def test_a_frame_comes_out_as_written(ctx):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 80, 4), dtype=np.uint8)
    image[..., 3] = 255
    image[:4] = (255, 0, 0, 255)  # the top rows red: orientation
    frame = FrameTexture(ctx)
    HostTransfer().present(torch.from_numpy(image), frame)
    out = read_through(ctx, frame, (80, 48))
    # Texel centres land on pixel centres at the same size, so bilinear filtering changes nothing.
    assert np.array_equal(out, image[..., :3])


def test_a_smaller_frame_is_stretched_and_the_texture_follows_the_size(ctx):
    frame = FrameTexture(ctx)
    ramp = np.zeros((32, 64, 4), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None]
    ramp[..., 3] = 255
    frame.write(np.ascontiguousarray(ramp[::2, ::2]))  # half size
    first = frame.generation
    out = read_through(ctx, frame, (64, 32)).astype(float)
    # A smooth ramp stretched bilinearly stays a ramp, within the one-texel clamp at the edges.
    assert np.abs(out[..., 0] - ramp[..., 0]).max() <= 8
    frame.write(ramp)
    assert frame.generation == first + 1 and frame.texture.size == (64, 32)
    frame.write(ramp)
    assert frame.generation == first + 1  # same size: the texture (and any CUDA registration) stays


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_interop_refuses_without_cuda(ctx):
    from savatar.gl.cuda_interop import InteropUnavailable, TextureLink

    with pytest.raises(InteropUnavailable):
        TextureLink(FrameTexture(ctx), stream=None)


class FakeRuntime:
    """Records the CUDA runtime calls a TextureLink makes (each returns success)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            if name == "cudaGraphicsGLRegisterImage":
                args[0]._obj.value = 0x1000 + len(self.calls)  # byref(resource): a new handle
            return 0
        return call


def test_interop_call_sequence_with_a_recording_runtime(ctx):
    """What cannot run here (no CUDA), checked for its order of calls: register the texture once
    per size, unregister before the texture is remade, map / copy with the image's pitch /
    unmap on the stage's stream every frame."""
    import ctypes
    import types

    from savatar.gl.cuda_interop import GL_TEXTURE_2D, MEMCPY_DEVICE_TO_DEVICE, TextureLink

    link = TextureLink.__new__(TextureLink)
    link._lib, link.frame = FakeRuntime(), FrameTexture(ctx)
    link.stream = types.SimpleNamespace(cuda_stream=777)
    link._resource, link._generation = ctypes.c_void_p(), -1
    pixels = torch.zeros((30, 40, 4), dtype=torch.uint8)
    link.copy(pixels)
    link.copy(pixels)
    names = [c[0] for c in link._lib.calls]
    assert names == ["cudaGraphicsGLRegisterImage"] + ["cudaGraphicsMapResources", "cudaGraphicsSubResourceGetMappedArray",
                                                       "cudaMemcpy2DToArrayAsync", "cudaGraphicsUnmapResources"] * 2
    register = link._lib.calls[0][1]
    assert register[1:] == (link.frame.texture.glo, GL_TEXTURE_2D, 2) and link.frame.texture.size == (40, 30)
    memcpy = link._lib.calls[3][1]
    assert memcpy[1:3] == (0, 0) and memcpy[3].value == pixels.data_ptr()
    assert memcpy[4:8] == (160, 160, 30, MEMCPY_DEVICE_TO_DEVICE) and memcpy[8].value == 777
    link._lib.calls.clear()
    link.copy(torch.zeros((20, 24, 4), dtype=torch.uint8))  # another size: a new texture
    names = [c[0] for c in link._lib.calls]
    assert names[:2] == ["cudaGraphicsUnregisterResource", "cudaGraphicsGLRegisterImage"]
    assert link.frame.texture.size == (24, 20)
    link.release()
    assert link._lib.calls[-1][0] == "cudaGraphicsUnregisterResource" and not link._resource.value
