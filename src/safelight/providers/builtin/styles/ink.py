"""Ink: sumi-e brush ink on rice paper, with misty ridges, dry-brush edges and a red seal."""

from __future__ import annotations

import numpy as np
from PIL import Image

from safelight.providers.builtin.canvas import Canvas
from safelight.providers.builtin.colours import from_hex, hsv, mix, to_hsv, vec
from safelight.providers.builtin.fields import F32, lerp, resize, smooth


def paint(cv: Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    paper = vec(from_hex("#f2ebdb"))
    img = paper * (0.95 + 0.06 * cv.noise(6.0, 2, sx=8.0, sy=0.7))[..., None]  # fibres
    ink = vec(hsv(to_hsv(p.near)[0], 0.3, 0.09))
    vermilion = vec(mix((0.80, 0.20, 0.13), p.accent, 0.15))
    dry = cv.noise(3.0, 3, sx=6.0, sy=0.8)
    for d in sc.discs:
        reach = max(d.r, 0.05 * cv.s)
        win, dist = cv.window(d.x, d.y, reach * 1.4)
        if d.kind == "orb":  # an enso: one brush ring, left open
            ang = np.arctan2(cv.y[win[0]] - np.float32(d.y), cv.x[:, win[1]] - np.float32(d.x))
            thick = np.float32(reach) * (0.08 + 0.16 * (np.sin(ang * 0.5 + d.x) * 0.5 + 0.5))
            ring = np.clip(1.0 - np.abs(dist - np.float32(reach)) / thick, 0.0, 1.0) * (ang < 2.6)
            lerp(img[win], ink, ring * (0.75 + 0.25 * dry[win]))
            continue
        col = vermilion if d.kind == "sun" else vec((0.55, 0.55, 0.55))
        cov = np.clip((np.float32(d.r) - dist) / np.float32(cv.px) + 0.5, 0.0, 1.0)
        lerp(img[win], col, cov * (0.8 + 0.2 * dry[win]) * (0.85 if d.kind == "sun" else 0.25))
    for ridge in sc.ridges:
        rows = cv.rows_below(ridge.y, 2.0 * cv.px)
        depth = np.clip(cv.y[rows] - ridge.y[None, :], 0.0, None)
        cov = cv.cover(ridge.y, 1.2 * cv.px, (dry[rows] - 0.5) * np.float32(2.0 * cv.px), rows)
        if ridge.kind == "water":
            streaks = smooth(cv.noise(2.0, 3, sx=0.25, sy=14.0)[rows], 0.62, 0.72)
            fade = np.exp(-depth / np.float32(0.4 * cv.h))
            lerp(img[rows], ink, cov * streaks * 0.45 * fade)
            continue
        # A wash that thins into mist below the ridge, and a dry-brush stroke along it.
        density = np.float32(0.18 + 0.72 * ridge.tone**1.3)
        mist = np.exp(-depth / np.float32((0.05 + 0.12 * ridge.tone) * cv.h))
        wash = cov * density * (0.12 + 0.88 * mist) * (0.85 + 0.3 * dry[rows])
        if sc.water:  # the land ends at the shore; the water is paper and brush streaks
            wash *= np.clip(np.float32(sc.horizon) - cv.y[rows] + 0.5, 0.0, 1.0)
        stroke = np.exp(-depth / np.float32((1.5 + 2.5 * ridge.tone) * cv.px)) * cov
        stroke *= min(1.0, float(density) + 0.3) * smooth(dry[rows], 0.25, 0.5)
        lerp(img[rows], ink, 1.0 - (1.0 - 0.9 * np.clip(wash, 0.0, 1.0)) * (1.0 - stroke))
    _seal(cv, img, vermilion, paper)
    return img


def _seal(cv: Canvas, img: F32, red: F32, paper: F32) -> None:
    """The artist's seal: a red square with a glyph (from the prompt's hash) cut into it."""
    size = max(4, int(cv.s * 0.07))
    x0, y0 = cv.w - size - int(cv.s * 0.05), cv.h - size - int(cv.s * 0.05)
    if x0 <= 0 or y0 <= 0:
        return
    bits = np.array([(cv.scene.tag >> k) & 1 for k in range(16)], dtype=np.float32)
    inner = size - 2 * (size // 6)
    carve = resize(bits.reshape(4, 4), inner, inner, Image.Resampling.NEAREST) > 0.5
    seal = img[y0 : y0 + size, x0 : x0 + size]
    seal[...] = red * 0.92
    m = size // 6
    seal[m : m + inner, m : m + inner] += carve[..., None] * ((paper - red) * 0.9)
