"""The painting surface for one image: coordinates, value noise, coverage masks, windows.

Every style paints through a ``Canvas``; every random draw comes from its generator.
"""

from __future__ import annotations

import math

import numpy as np

from safelight.providers.builtin.colours import Rgb, vec
from safelight.providers.builtin.fields import F32, f32, resize
from safelight.providers.builtin.scene import Ridge, Scene

Window = tuple[slice, slice]


class Canvas:
    """Coordinates, noise and masks for one image; every draw comes from ``rng``.

    Work is confined where it can be (discs to a window around them, land to the rows
    below its ridge) so a 2048 x 2048 picture takes about a second, not a minute.
    """

    def __init__(self, scene: Scene, rng: np.random.Generator) -> None:
        self.scene = scene
        self.rng = rng
        self.w, self.h = scene.width, scene.height
        self.s = float(min(self.w, self.h))
        self.y = np.arange(self.h, dtype=np.float32)[:, None] + np.float32(0.5)
        self.x = np.arange(self.w, dtype=np.float32)[None, :] + np.float32(0.5)
        self.px = max(1.0, self.s / 512.0)  # one "design pixel" at 512 px

    def noise(self, cells: float, octaves: int = 1, sx: float = 1.0, sy: float = 1.0) -> F32:
        """Fractal value noise in 0..1, ``cells`` per short side, stretched by sx/sy.

        The octaves are summed at a modest size (8 px per finest cell is plenty for
        bicubic value noise) and upscaled once."""
        finest = cells * 2 ** (octaves - 1)
        ww = min(self.w, max(8, math.ceil(finest * sx * self.w / self.s * 8)))
        wh = min(self.h, max(8, math.ceil(finest * sy * self.h / self.s * 8)))
        out = np.zeros((wh, ww), dtype=np.float32)
        total = 0.0
        for o in range(octaves):
            c = cells * 2**o
            gw = max(2, math.ceil(c * sx * self.w / self.s) + 1)
            gh = max(2, math.ceil(c * sy * self.h / self.s) + 1)
            grid = self.rng.random((gh, gw), dtype=np.float32)
            out += np.float32(0.5**o) * resize(grid, ww, wh)
            total += 0.5**o
        out /= np.float32(total)
        if (ww, wh) != (self.w, self.h):
            out = resize(out, self.w, self.h)
        return np.clip(out, 0.0, 1.0)

    def rows_below(self, ridge: F32, pad: float = 0.0) -> slice:
        top = int(max(0.0, float(ridge.min()) - pad - 1.0))
        return slice(min(top, self.h), self.h)

    def cover(
        self, ridge: F32, soft: float = 1.0, shift: F32 | float = 0.0, rows: slice = slice(None)
    ) -> F32:
        """Anti-aliased coverage of the land below ``ridge`` (0 above, 1 below) on ``rows``;
        an array ``shift`` must already be cut to ``rows``."""
        return f32(np.clip((self.y[rows] + shift - ridge[None, :]) / np.float32(soft) + 0.5, 0, 1))

    def window(self, cx: float, cy: float, reach: float) -> tuple[Window, F32]:
        """The slices of a square around (cx, cy) and each pixel's distance to it."""
        x0, x1 = min(self.w, max(0, int(cx - reach))), min(self.w, max(0, int(cx + reach) + 2))
        y0, y1 = min(self.h, max(0, int(cy - reach))), min(self.h, max(0, int(cy + reach) + 2))
        dx = self.x[:, x0:x1] - np.float32(cx)
        dy = self.y[y0:y1] - np.float32(cy)
        return (slice(y0, y1), slice(x0, x1)), np.sqrt(dx * dx + dy * dy)

    def sky(self) -> F32:
        """The sky gradient, one colour per row, as (h, 1, 3)."""
        top, mid, low = (vec(c) for c in self.scene.palette.sky)
        t = np.clip(self.y / np.float32(max(self.scene.horizon, 1.0)), 0.0, 1.0)[..., None]
        upper = top + (mid - top) * np.clip(t * 2.0, 0.0, 1.0)
        lower = mid + (low - mid) * np.clip(t * 2.0 - 1.0, 0.0, 1.0)
        return f32(np.where(t < 0.5, upper, lower))

    def stars(
        self, target: F32, radius: float, colour: Rgb | None = None, gain: float = 1.0
    ) -> None:
        """Add soft star points to ``target`` ((h, w) or, with ``colour``, (h, w, 3))."""
        tint = vec(colour) if colour is not None else None
        for x, y, b in self.scene.stars:
            r = radius * (0.6 + 1.2 * float(b))
            (sy, sx), dist = self.window(float(x), float(y), 3.0 * r)
            dot = np.float32((0.35 + 0.65 * float(b)) * gain) * np.exp(
                -((dist / np.float32(r)) ** 2)
            )
            if sy.stop > target.shape[0]:  # the target may hold only the sky's rows
                sy = slice(min(sy.start, target.shape[0]), target.shape[0])
                dot = dot[: sy.stop - sy.start]
            if tint is None:
                target[sy, sx] += dot
            else:
                target[sy, sx] += dot[..., None] * tint


def lit_windows(cv: Canvas, ridge: Ridge, rows: slice) -> F32:
    """Lit windows of a night skyline on ``rows``, as a 0/1 mask."""
    cell = np.float32(max(2.0, cv.s * 0.012))
    gx, gy = np.floor(cv.x / cell), np.floor(cv.y[rows] / cell)
    lit = ((gx * 73.0 + gy * 151.0 + cv.scene.tag % 997) * 0.618) % 1.0 > 0.78
    inner = ((cv.x % cell) < cell * 0.6) & ((cv.y[rows] % cell) < cell * 0.55)
    below = cv.y[rows] > ridge.y[None, :] + cell
    return f32(lit & inner & below)
