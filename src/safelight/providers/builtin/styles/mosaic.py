"""Mosaic: hand-cut tiles with dark grout, each tile one colour of the flat scene."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from safelight.providers.builtin.canvas import Canvas
from safelight.providers.builtin.colours import vec
from safelight.providers.builtin.fields import F32, f32, lerp, resize
from safelight.providers.builtin.styles import flat


def paint(cv: Canvas) -> F32:
    """Voronoi tiles on a jittered grid.  The cells are found at most 1024 px wide and
    scaled up: the distance-to-edge field is smooth, so bilinear scaling keeps the grout
    crisp."""
    base = flat.paint(cv)
    cell = max(6.0, cv.s / 26.0)
    # One ring of cells beyond the canvas on every side, so each pixel's 3 x 3 neighbourhood
    # exists (clipping indices instead would repeat a point and draw grout along the edge).
    gw, gh = math.ceil(cv.w / cell) + 2, math.ceil(cv.h / cell) + 2
    jitter = cv.rng.random((gh, gw, 2), dtype=np.float32)
    ptx = (
        np.arange(-1, gw - 1, dtype=np.float32)[None, :] + 0.12 + 0.76 * jitter[..., 0]
    ) * np.float32(cell)
    pty = (
        np.arange(-1, gh - 1, dtype=np.float32)[:, None] + 0.12 + 0.76 * jitter[..., 1]
    ) * np.float32(cell)
    f = max(1, math.ceil(max(cv.w, cv.h) / 1024))
    sw, sh = math.ceil(cv.w / f), math.ceil(cv.h / f)
    xs = (np.arange(sw, dtype=np.float32)[None, :] + 0.5) * np.float32(f)
    ys = (np.arange(sh, dtype=np.float32)[:, None] + 0.5) * np.float32(f)
    cx = (xs / np.float32(cell)).astype(np.intp) + 1
    cy = (ys / np.float32(cell)).astype(np.intp) + 1
    d1 = np.full((sh, sw), np.inf, dtype=np.float32)
    d2 = d1.copy()
    best = np.zeros((sh, sw), dtype=np.intp)
    for oy in (-1, 0, 1):
        ny = cy + oy
        for ox in (-1, 0, 1):
            nx = cx + ox
            d = (ptx[ny, nx] - xs) ** 2 + (pty[ny, nx] - ys) ** 2
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            best = np.where(closer, ny * gw + nx, best)
            d1 = np.where(closer, d, d1)
    d1, d2 = np.sqrt(d1), np.sqrt(d2)
    gap, centre = (d2 - d1) * 0.5, d1
    if f > 1:
        gap, centre = (
            resize(gap, cv.w, cv.h, Image.Resampling.BILINEAR),
            resize(centre, cv.w, cv.h, Image.Resampling.BILINEAR),
        )
        best = best[(np.arange(cv.h) // f)[:, None], (np.arange(cv.w) // f)[None, :]]
    px_ = np.clip(ptx.reshape(-1), 0, cv.w - 1).astype(np.intp)
    py_ = np.clip(pty.reshape(-1), 0, cv.h - 1).astype(np.intp)
    tiles = base[py_, px_]
    grey = tiles.mean(-1, keepdims=True)
    tiles = (grey + (tiles - grey) * 1.25) * (
        0.9 + 0.2 * cv.rng.random((gh * gw, 1), dtype=np.float32)
    )
    img = f32(
        tiles[best] * (1.05 - 0.10 * np.clip(centre / np.float32(0.7 * cell), 0, 1))[..., None]
    )
    grout = np.clip(1.0 - (gap - np.float32(0.035 * cell)) / np.float32(cv.px), 0.0, 1.0)
    lerp(img, vec((0.16, 0.15, 0.14)), grout)
    return img
