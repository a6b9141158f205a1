"""Float32 fields: the array type every stage works in, and the operations they share.

Everything here is a pure function of its arguments (``fbm1d`` of its generator too):
resampling through Pillow, a cheap blur, smoothstep, in-place blending, and 1-D fractal
noise for ridge lines and curtains.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

F32 = npt.NDArray[np.float32]


def f32(a: object) -> F32:
    """``a`` as a float32 array (no copy when it already is one; also narrows types)."""
    return np.asarray(a, dtype=np.float32)


def resize(a: F32, w: int, h: int, how: Image.Resampling = Image.Resampling.BICUBIC) -> F32:
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize((w, h), how), dtype=np.float32)


def blur(a: F32, sigma: float) -> F32:
    """A cheap, smooth blur of a 2-D float field: box-reduce, then bicubic back up."""
    if sigma < 0.6 or a.size == 0:
        return a
    h, w = a.shape
    small = resize(a, max(1, round(w / (2 * sigma))), max(1, round(h / (2 * sigma))),
                   Image.Resampling.BOX)  # fmt: skip
    return resize(small, w, h)


def smooth(a: F32, lo: float, hi: float) -> F32:
    t = np.clip((a - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    return f32(t * t * (3.0 - 2.0 * t))


def lerp(img: F32, colour: F32, alpha: F32) -> None:
    """img += (colour - img) * alpha, in place; ``alpha`` has no channel axis."""
    img += (colour - img) * alpha[..., None]


def fbm1d(rng: np.random.Generator, n: int, cells: int, octaves: int) -> F32:
    """Smooth 1-D fractal noise over ``n`` samples, in 0..1."""
    out = np.zeros(n, dtype=np.float32)
    total = 0.0
    for o in range(octaves):
        c = cells * 2**o
        knots = rng.random(c + 2, dtype=np.float32)
        pos = np.linspace(0.0, c, n, dtype=np.float32)
        i = np.floor(pos).astype(np.intp)
        f = pos - i
        f = f * f * (3 - 2 * f)
        amp = 0.5**o
        out += amp * (knots[i] * (1 - f) + knots[i + 1] * f)
        total += amp
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / np.float32(max(hi - lo, 1e-6))
