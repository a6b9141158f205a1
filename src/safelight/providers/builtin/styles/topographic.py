"""Topographic: the scene read as terrain, tinted by height and hillshaded, with contour
lines, a graticule and a ruled map border."""

from __future__ import annotations

import numpy as np

from safelight.providers.builtin.canvas import Canvas
from safelight.providers.builtin.colours import from_hex, mix, vec
from safelight.providers.builtin.fields import F32, blur, f32, lerp, smooth


def paint(cv: Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    height = 0.55 * cv.noise(1.6, 5)
    for ridge in sc.ridges:
        if ridge.kind != "water":
            # Pad by the blur's full reach (box cell 2 sigma, bicubic spans 2 cells).
            rows = cv.rows_below(ridge.y, 0.3 * cv.s)
            height[rows] += 0.12 * blur(cv.cover(ridge.y, rows=rows), 0.05 * cv.s)
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, 4.0 * d.r)
        bump = 0.45 if d.kind != "orb" else 0.25
        height[win] += bump * np.exp(-((dist / np.float32(1.6 * d.r)) ** 2))
    lo, hi = float(height.min()), float(height.max())
    height = (height - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
    gy, gx = np.gradient(height)
    relief = np.float32(cv.s * 0.06)
    shade = np.clip(0.85 - (gx * 0.6 + gy * 0.8) * relief, 0.55, 1.25)
    cream = from_hex("#f4eedf")
    # A classic hypsometric tint (lowland green, tan, brown, snow) leaning to the palette.
    stops = [
        (0.0, mix(from_hex("#9cc18f"), p.near, 0.3)),
        (0.35, mix(from_hex("#e3d9a3"), p.far, 0.25)),
        (0.7, mix(from_hex("#c0915f"), p.accent, 0.2)),
        (0.92, cream),
        (1.0, cream),
    ]
    ramp = np.linspace(0.0, 1.0, 256)
    pos = [q for q, _ in stops]
    lut = f32(np.stack([np.interp(ramp, pos, [c[i] for _, c in stops]) for i in range(3)], -1))
    img = f32(lut[(height * 255.0).astype(np.uint8)] * shade[..., None])
    if sc.water:
        sea = np.float32(0.28)
        wet = smooth(sea - height, -0.004, 0.004)
        shallow = vec(mix((0.70, 0.85, 0.93), p.sky[1], 0.15))
        deep = vec(mix((0.38, 0.60, 0.80), p.sky[0], 0.15))
        water = shallow + (deep - shallow) * np.clip((sea - height) / sea, 0.0, 1.0)[..., None]
        lerp(img, water, wet)
    # Contours: every level a hairline, every fifth an index contour.  Distance to the
    # nearest level in pixels is the level distance over the gradient's size.
    levels = np.float32(22.0)
    f = height * levels
    grad = np.sqrt(gx * gx + gy * gy) * levels + np.float32(1e-4)
    index = (np.abs(np.round(f)) % 5) == 0
    thick = np.where(index, np.float32(1.4 * cv.px), np.float32(0.6 * cv.px))
    line = np.clip(1.0 - np.abs(f - np.round(f)) / grad / thick, 0.0, 1.0)
    ink = vec(mix(p.near, (0.18, 0.11, 0.06), 0.6))
    lerp(img, ink, line * np.where(index, np.float32(0.85), np.float32(0.55)))
    spacing = np.float32(cv.s / 6.0)
    gridx = np.abs(cv.x / spacing - np.round(cv.x / spacing)) * spacing
    gridy = np.abs(cv.y / spacing - np.round(cv.y / spacing)) * spacing
    graticule = np.clip(1.0 - np.minimum(gridx, gridy) / np.float32(0.5 * cv.px), 0.0, 1.0)
    lerp(img, vec((0.3, 0.4, 0.5)), graticule * 0.25)
    _map_frame(cv, img, ink, vec(cream))
    return img


def _map_frame(cv: Canvas, img: F32, ink: F32, paper: F32) -> None:
    """A cream margin and a ruled border, drawn on the four edge strips only."""
    margin = 0.025 * cv.s
    strip = int(margin + 3 * cv.px) + 1
    for win in (
        (slice(0, strip), slice(None)),
        (slice(max(0, cv.h - strip), cv.h), slice(None)),
        (slice(None), slice(0, strip)),
        (slice(None), slice(max(0, cv.w - strip), cv.w)),
    ):
        xs, ys = cv.x[:, win[1]], cv.y[win[0]]
        edge = np.minimum(np.minimum(xs, cv.w - xs), np.minimum(ys, cv.h - ys))
        part = img[win]
        lerp(part, paper, (edge < margin - cv.px).astype(np.float32))
        lerp(
            part,
            ink,
            np.clip(1.0 - np.abs(edge - np.float32(margin)) / np.float32(0.9 * cv.px), 0, 1),
        )
