"""Aurora: a night sky of northern-light curtains over dark silhouettes and reflections.

The curtains are green near their wavy lower edge and take the palette's hue higher up;
land is a silhouette with a rim of the curtains' light, and water mirrors the sky."""

from __future__ import annotations

import numpy as np

from safelight.providers.builtin.canvas import Canvas
from safelight.providers.builtin.colours import hsv, mix, scaled, to_hsv, vec
from safelight.providers.builtin.fields import F32, blur, fbm1d, lerp, smooth


def paint(cv: Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    hz = sc.horizon
    t = np.clip(cv.y / np.float32(hz), 0.0, 1.0)[..., None]
    top, low = (
        vec((0.005, 0.01, 0.04)),
        vec(mix((0.02, 0.09, 0.14), scaled(p.sky[1], 0.2), 0.4)),
    )
    img = np.broadcast_to(top + (low - top) * t**1.5, (cv.h, cv.w, 3)).copy()
    low_hue = 150.0 + ((sc.tag >> 7) % 41 - 20)
    h_mid, s_mid, _ = to_hsv(p.sky[1])
    up_hue = h_mid if s_mid > 0.25 and abs((h_mid - low_hue + 180) % 360 - 180) > 50 else 290.0
    green, upper = vec(hsv(low_hue, 0.8, 1.0)), vec(hsv(up_hue, 0.7, 0.95))
    # Curtains: a wavy lower edge per band, rays that fade upwards, split into the
    # light near the edge (green) and the light higher up (the palette's hue).
    sky = slice(0, min(cv.h, int(hz) + 1))
    near_edge = np.zeros((sky.stop, cv.w), dtype=np.float32)
    high = np.zeros_like(near_edge)
    for k in range(3):
        base = hz * (0.35 + 0.18 * k) + (fbm1d(cv.rng, cv.w, 2, 3) - 0.5) * hz * 0.35
        rays = fbm1d(cv.rng, cv.w, max(4, int(cv.w / cv.s * 18)), 2) ** 2.5 * 1.6 + 0.15
        tall = np.float32(hz * (0.25 + 0.12 * float(cv.rng.random())))
        above = np.clip(base[None, :] - cv.y[sky], 0.0, None)
        under = np.clip(cv.y[sky] - base[None, :], 0.0, None)
        band = np.exp(-above / tall - (under / np.float32(0.02 * cv.h)) ** 2)
        band *= rays[None, :] * np.float32(0.9 - 0.2 * k)
        rise = np.clip(above / tall, 0.0, 1.0)
        near_edge += band * (1.0 - rise)
        high += band * rise
    near_edge, high = blur(near_edge, 1.2 * cv.px), blur(high, 1.2 * cv.px)
    img[sky] += 0.9 * (near_edge[..., None] * green + high[..., None] * upper)
    stars = np.zeros((cv.h, cv.w), dtype=np.float32)
    cv.stars(stars, 0.8 * cv.px)
    stars[sky] *= 1.0 - np.clip((near_edge + high) * 0.9, 0.0, 1.0)
    img += np.clip(stars, 0.0, 1.0)[..., None] * vec((0.9, 0.95, 1.0))
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, d.r * (6.0 if d.kind == "orb" else 12.0))
        col = vec(mix(d.colour, (1.0, 1.0, 0.95), 0.5))
        glow = np.exp(-dist / np.float32(d.r * (1.5 if d.kind == "orb" else 3.0))) * 0.25
        img[win] += glow[..., None] * col
        lerp(
            img[win],
            col * (0.9 if d.kind != "orb" else 0.55),
            np.clip(np.float32(d.r + 0.5) - dist, 0, 1),
        )
    rim_colour = (near_edge.mean(0)[:, None] * green + high.mean(0)[:, None] * upper)[None, ...]
    sil = vec(scaled(p.near, 0.12))
    for ridge in sc.ridges:
        rows = cv.rows_below(ridge.y)
        cov = cv.cover(ridge.y, rows=rows)
        if ridge.kind == "water":  # a rippled mirror of everything above it
            src = np.clip(2 * hz - cv.y[rows, 0], 0, cv.h - 1).astype(np.intp)
            ripple = cv.noise(2.0, 3, sx=0.3, sy=12.0)[rows]
            sway = (fbm1d(cv.rng, len(src), max(4, len(src) // 3), 2) - 0.5) * 0.03 * cv.s
            cols = np.clip(np.arange(cv.w)[None, :] + sway.astype(np.intp)[:, None], 0, cv.w - 1)
            fade = np.exp(-(cv.y[rows] - np.float32(hz)) / np.float32(0.5 * cv.h))
            mirror = (
                img[src[:, None], cols]
                * (fade * (0.3 + 0.5 * smooth(ripple, 0.35, 0.7)))[..., None]
            )
            lerp(img[rows], mirror, cov)
            continue
        below = np.clip(cv.y[rows] - ridge.y[None, :], 0.0, None)
        rim = np.exp(-below / np.float32(3.0 * cv.px)) * 0.35
        colour = sil * np.float32(1.0 + 1.5 * (1.0 - ridge.tone)) + rim[..., None] * rim_colour
        lerp(img[rows], colour, cov)
    return img
