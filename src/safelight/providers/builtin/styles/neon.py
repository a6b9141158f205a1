"""Neon: glowing outlines over a dark synthwave horizon and a perspective grid.

Outlines are drawn into a separate light layer, blurred twice for the glow, and added to
the dark sky through a soft shoulder so bright areas saturate instead of clipping."""

from __future__ import annotations

import numpy as np

from safelight.providers.builtin.canvas import Canvas, lit_windows
from safelight.providers.builtin.colours import hsv, mix, scaled, to_hsv, vec, vivid
from safelight.providers.builtin.fields import F32, blur, f32, lerp


def paint(cv: Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    hz = sc.horizon
    hue, hue2 = to_hsv(p.accent)[0], to_hsv(p.sky[1])[0]
    if abs((hue - hue2 + 180) % 360 - 180) < 60:
        hue2 = hue + 150
    ca, cb = vec(hsv(hue, 0.85, 1.0)), vec(hsv(hue2, 0.8, 1.0))
    dark = vec(scaled(vivid(p.sky[0], 0.6, 1.0), 0.10))
    t = np.clip(cv.y / np.float32(hz), 0.0, 1.0)[..., None]
    glow_sky = dark * (0.4 + 1.4 * t**2) + cb * (0.3 * t**5)
    img = np.broadcast_to(glow_sky, (cv.h, cv.w, 3)).copy()
    light = np.zeros((cv.h, cv.w, 3), dtype=np.float32)
    width = np.float32(1.1 * cv.px)

    # The grid floor below the horizon, in perspective: rows at equal depth steps,
    # columns converging on the vanishing point.  Widths are divided by the local
    # derivative so every line is about ``width`` pixels wide at any depth.
    below = slice(min(cv.h, int(hz) + 1), cv.h)
    depth = np.maximum(cv.y[below] - np.float32(hz), 0.5)
    reach = np.float32(0.5 * cv.h)
    z = reach / depth
    row_gap = depth * depth / reach  # pixels between neighbouring rows here
    rows = np.abs(z - np.round(z)) * row_gap
    k = np.float32(6.0)
    u = (cv.x - np.float32(cv.w / 2)) / depth * k
    cols = np.abs(u - np.round(u)) * depth / k
    # Fade lines where they crowd closer than a few line widths (no moire at the horizon).
    row_line = np.exp(-((rows / width) ** 2)) * np.clip(row_gap / (5 * width) - 0.6, 0, 1)
    col_line = np.exp(-((cols / width) ** 2)) * np.clip(depth / k / (5 * width) - 0.6, 0, 1)
    fade = np.clip(depth / reach, 0.0, 1.0) ** 0.5
    light[below] += (np.maximum(row_line, col_line) * fade)[..., None] * cb * 0.9
    band = slice(max(0, int(hz - 12 * width)), min(cv.h, int(hz + 12 * width) + 1))
    light[band] += (
        np.exp(-np.abs(cv.y[band] - np.float32(hz)) / (2.5 * width))[..., None] * ca * 0.8
    )

    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, d.r + 4 * float(width))
        if d.kind == "sun":
            disc = np.clip(np.float32(d.r + 0.5) - dist, 0.0, 1.0)
            v = np.clip((cv.y[win[0]] - np.float32(d.y - d.r)) / np.float32(2 * d.r), 0.0, 1.0)
            cut = (v < 0.45) | (((v - 0.45) * 14.0) % 1.0 > (v - 0.45) * 1.3)
            top = vec(hsv(50, 0.75, 1.0))
            light[win] += (disc * cut)[..., None] * (top + (ca - top) * v[..., None])
        else:
            ring = np.exp(-(((dist - np.float32(d.r)) / width) ** 2))
            light[win] += ring[..., None] * (ca if d.kind == "moon" else vec(vivid(d.colour)))
    cv.stars(light, 0.8 * cv.px, mix(hsv(hue2, 0.3, 1.0), (1.0, 1.0, 1.0), 0.5))
    land = [r for r in sc.ridges if r.kind != "water"]
    for i, ridge in enumerate(land):
        rows = slice(
            max(0, int(ridge.y.min() - 6 * width)), min(cv.h, int(ridge.y.max() + 6 * width) + 1)
        )
        fill = slice(rows.start, max(rows.start, min(rows.stop, int(hz) + 1)))
        cov = cv.cover(ridge.y, rows=fill) * (cv.y[fill] < hz)
        lerp(img[fill], dark * 0.6, cov)
        light[fill] *= (1.0 - cov)[..., None]
        slope = np.sqrt(1.0 + np.gradient(ridge.y) ** 2)[None, :]
        line = np.exp(-((np.abs(cv.y[rows] - ridge.y[None, :]) / slope / width) ** 2))
        col = ca + (cb - ca) * np.float32(i / max(1, len(land) - 1))
        light[rows] += line[..., None] * col
        if ridge.kind == "city":
            light[fill] += (lit_windows(cv, ridge, fill) * cov)[..., None] * cb * 0.7
    for c in range(3):
        glow = blur(light[..., c], 2.5 * cv.px) * 0.8 + blur(light[..., c], 12.0 * cv.px) * 0.9
        img[..., c] += light[..., c] + glow
    return f32(1.0 - np.exp(-img * 1.25))  # a soft shoulder: glows saturate instead of clipping
