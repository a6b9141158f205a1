"""Watercolor: soft pigment washes on textured paper, with pooled edges and white glints.

Each wash is a multiply glaze, darker at its dried edge; clouds, stars, the sun and the moon
are reserved as bare paper first (masking fluid), and neighbouring land washes stop at a
wobbly seam, leaving gaps and overlaps."""

from __future__ import annotations

import numpy as np

from safelight.providers.builtin.canvas import Canvas, Window
from safelight.providers.builtin.colours import Rgb, from_hex, rotate, scaled, vec
from safelight.providers.builtin.fields import F32, blur, smooth
from safelight.providers.builtin.scene import layer_colour


def paint(cv: Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    paper = vec(from_hex("#f8f3e9"))
    img = np.broadcast_to(paper, (cv.h, cv.w, 3)).copy()
    reach = 0.02 * cv.s
    wobble = (cv.noise(5.0, 4) - 0.5) * np.float32(2 * reach)
    seam = (cv.noise(9.0, 2) - 0.5) * np.float32(0.014 * cv.s)
    pool, bloom = cv.noise(3.0, 3), cv.noise(1.5, 3)
    soft = 1.2 * cv.px
    everywhere: Window = (slice(None), slice(None))

    def wash(win: Window, region: F32, colour: F32, opacity: float) -> None:
        """Glaze pigment over the paper (multiply), darker where the wash dried: its edge."""
        edge = np.clip(region - blur(region, 0.007 * cv.s), 0.0, 1.0)
        alpha = region * (np.float32(opacity) * (0.75 + 0.4 * pool[win]) + 1.3 * edge)
        img[win] *= 1.0 - np.clip(alpha, 0.0, 1.0)[..., None] * (1.0 - np.clip(colour, 0.0, 1.0))

    def varied(colour: Rgb, rows: slice) -> F32:
        """Wet-in-wet: the pigment drifts in hue and strength across the wash."""
        a, b = vec(rotate(colour, -22)), vec(rotate(scaled(colour, 0.85), 24))
        return a + (b - a) * bloom[rows, :, None]

    first = sc.ridges[0] if sc.ridges else None
    sky_rows = slice(0, cv.h if first is None else min(cv.h, int(first.y.max() + reach) + 2))
    land = np.zeros((sky_rows.stop, cv.w), dtype=np.float32)
    if first is not None:
        land = cv.cover(first.y, soft, wobble[sky_rows], sky_rows)
    # The sky, with clouds and stars left as bare paper (masking fluid).
    clouds = smooth(cv.noise(2.2, 4, sx=0.6, sy=1.6)[sky_rows], 0.58, 0.8)
    reserved = np.zeros_like(land)
    cv.stars(reserved, 1.1 * cv.px, gain=2.0)
    for d in sc.discs:  # the sun and moon are left bare too, then painted in their colour
        (ys, xs), dist = cv.window(d.x, d.y, d.r + 2.0)
        ys = slice(min(ys.start, sky_rows.stop), min(ys.stop, sky_rows.stop))
        disc = np.clip(
            (np.float32(d.r) - dist[: ys.stop - ys.start]) / np.float32(soft) + 0.5, 0, 1
        )
        reserved[ys, xs] = np.maximum(reserved[ys, xs], disc)
    sky = cv.sky()[sky_rows] * (0.9 + 0.2 * bloom[sky_rows, :, None])
    veil = 1.0 - clouds * np.float32(0.3 if sc.night else 0.85)
    region = (1.0 - land) * veil * (1.0 - np.clip(reserved, 0.0, 1.0))
    wash((sky_rows, slice(None)), region, sky, 0.95 if sc.night else 0.8)
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, d.r * (3.0 if d.kind == "sun" else 1.0) + 2.0)
        bare = 1.0 - _crop(land, win, fill=1.0)  # below the sky band is all land
        disc = np.clip((np.float32(d.r) - dist) / np.float32(soft) + 0.5, 0.0, 1.0) * bare
        if d.kind == "sun":
            halo = np.clip(1.0 - dist / np.float32(3.0 * d.r), 0.0, 1.0) ** 2 * bare
            wash(win, halo * (1.0 - disc), vec(d.colour), 0.45)
        wash(win, disc, vec(d.colour), 0.35 if d.kind == "moon" else 0.8)
    for k, ridge in enumerate(sc.ridges):
        rows = cv.rows_below(ridge.y, reach)
        region = cv.cover(ridge.y, soft, wobble[rows], rows)
        if k + 1 < len(sc.ridges):  # stop at the next wash, leaving gaps and overlaps
            nxt = sc.ridges[k + 1].y
            region *= 1.0 - cv.cover(nxt, soft, wobble[rows] + seam[rows], rows)
        depth = np.clip((cv.y[rows] - ridge.y[None, :]) / np.float32(0.3 * cv.h), 0.0, 1.0)
        if ridge.kind == "water":
            glints = smooth(cv.noise(2.0, 3, sx=0.5, sy=28.0)[rows], 0.66, 0.76) * 0.7
            top, deep = vec(p.sky[1]), vec(p.near)
            colour = top + (deep - top) * (depth**0.6)[..., None]
            wash((rows, slice(None)), region * (1.0 - glints), colour, 0.9)
            continue
        body = varied(layer_colour(sc, ridge), rows)
        colour = body + (vec(p.sky[1]) - body) * (0.3 * depth)[..., None]
        wash((rows, slice(None)), region, colour, 0.75 + 0.25 * ridge.tone)
    if not sc.night and len(sc.stars):  # spatter
        spots = np.zeros((cv.h, cv.w), dtype=np.float32)
        cv.stars(spots, 0.9 * cv.px)
        wash(everywhere, np.clip(spots, 0.0, 1.0), vec(p.near), 0.7)
    grain = cv.noise(cv.s / 6.0, 1) * 0.6 + cv.noise(30.0, 2) * 0.4
    img *= (0.93 + 0.09 * grain)[..., None]
    return img


def _crop(a: F32, win: Window, fill: float) -> F32:
    """``a[win]`` where ``a`` may stop above the window's last rows: those read ``fill``."""
    rows, cols = win
    part = a[rows.start : min(rows.stop, a.shape[0]), cols]
    missing = (rows.stop - rows.start) - part.shape[0]
    if missing <= 0:
        return part
    return np.pad(part, ((0, missing), (0, 0)), constant_values=np.float32(fill))
