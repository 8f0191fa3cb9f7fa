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
