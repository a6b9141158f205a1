"""The flat rendering: the scene in clean, even colour (sky gradient, discs, stars, land
layers with aerial perspective).  Not one of the six styles: the mosaic samples its
tile colours from it."""

from __future__ import annotations

import numpy as np

from safelight.providers.builtin.canvas import Canvas, lit_windows
from safelight.providers.builtin.colours import mix, vec
from safelight.providers.builtin.fields import F32, lerp
from safelight.providers.builtin.scene import layer_colour


def paint(cv: Canvas) -> F32:
    """A clean, flat rendering of the scene: the picture mosaic cuts into tiles."""
    sc, p = cv.scene, cv.scene.palette
    img = np.broadcast_to(cv.sky(), (cv.h, cv.w, 3)).copy()
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, d.r * (9.0 if d.kind == "sun" else 1.0) + 2.0)
        part, col = img[win], vec(d.colour)
        if d.kind == "sun":
            part += col * (0.45 * np.exp(-dist / np.float32(2.2 * d.r)))[..., None]
        if d.kind == "orb":
            col = col * (1.0 - 0.3 * np.clip(dist / np.float32(d.r), 0.0, 1.0) ** 2)[..., None]
        lerp(part, col, np.clip(np.float32(d.r + 0.5) - dist, 0.0, 1.0))
    cv.stars(img, 0.9 * cv.px, mix(p.accent, (1.0, 1.0, 1.0), 0.6))
    for ridge in sc.ridges:
        rows = cv.rows_below(ridge.y)
        part, cov = img[rows], cv.cover(ridge.y, rows=rows)
        depth = np.clip((cv.y[rows] - ridge.y[None, :]) / np.float32(0.3 * cv.h), 0.0, 1.0)
        if ridge.kind == "water":
            low, deep = vec(p.sky[2]), vec(p.near)
            colour = low + (deep - low) * (depth**0.6)[..., None]
        else:
            colour = vec(layer_colour(sc, ridge)) * (1.0 - 0.22 * depth)[..., None]
            if ridge.kind == "city" and sc.night:
                colour += lit_windows(cv, ridge, rows)[..., None] * vec(p.accent)
        lerp(part, colour, cov)
    return img
