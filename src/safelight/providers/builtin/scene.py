"""Laying out the scene: a ``Plan`` at a size -> ridges of land, discs and stars in pixels.

Every random draw comes from the image's seeded generator, in a fixed order, so equal
requests lay out equal scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safelight.providers.builtin.colours import Rgb, mix, vivid
from safelight.providers.builtin.fields import F32, f32, fbm1d
from safelight.providers.builtin.prompt import Palette, Plan


@dataclass(frozen=True, slots=True)
class Ridge:
    """One layer of land: pixels below ``y`` (one value per column) belong to it."""

    y: F32
    kind: str
    tone: float  # 0 = farthest, 1 = nearest


@dataclass(frozen=True, slots=True)
class Disc:
    x: float
    y: float
    r: float
    kind: str  # "sun", "moon" or "orb"
    colour: Rgb


@dataclass(frozen=True, slots=True)
class Scene:
    width: int
    height: int
    palette: Palette
    horizon: float
    ridges: tuple[Ridge, ...]  # far to near
    discs: tuple[Disc, ...]
    stars: npt.NDArray[np.float32]  # (n, 3): x, y, brightness
    water: bool
    night: bool
    tag: int


def build_scene(plan: Plan, width: int, height: int, rng: np.random.Generator) -> Scene:
    """Lay out the picture in pixel coordinates.  Every draw comes from ``rng``."""
    w, h, m = width, height, plan.motifs
    s = float(min(w, h))
    horizon = h * (0.56 + 0.08 * float(rng.random()))
    water = "waves" in m
    ridges: list[Ridge] = []

    def base(offset: float) -> float:
        return horizon if water else horizon + offset * h

    if "mountains" in m:
        peaks = fbm1d(rng, w, 3, 5)
        ridges.append(Ridge(base(0.0) - h * (0.06 + 0.30 * peaks**1.6), "mountains", 0.0))
        near = fbm1d(rng, w, 2, 5)
        ridges.append(Ridge(base(0.05) - h * (0.02 + 0.17 * near**1.4), "mountains", 0.4))
    if "city" in m:
        ridges.append(Ridge(_skyline(rng, w, h, base(0.02)), "city", 0.55))
    if "dunes" in m:
        for k, tone in enumerate((0.35, 0.75)):
            dune = fbm1d(rng, w, 2 + k, 2)
            ridges.append(Ridge(base(0.03 + 0.14 * k) - h * 0.09 * dune, "dunes", tone))
    if "hills" in m or ("trees" in m and not ridges):
        hill = fbm1d(rng, w, 2, 3)
        ridges.append(Ridge(base(0.12) - h * (0.02 + 0.08 * hill), "hills", 0.8))
    if "trees" in m:
        last = ridges[-1]
        ridges[-1] = Ridge(_treeline(rng, last.y, s), last.kind, last.tone)
    if water and not ridges:  # a distant shore, so the sea meets something
        shore = fbm1d(rng, w, 3, 4)
        ridges.append(
            Ridge(horizon - h * 0.07 * np.clip(shore * 1.6 - 0.6, 0.0, 1.0), "hills", 0.2)
        )
    if water:
        ridges.append(Ridge(np.full(w, horizon, dtype=np.float32), "water", 1.0))

    discs: list[Disc] = []
    p = plan.palette
    if "sun" in m or "moon" in m:
        r = s * (0.07 + 0.05 * float(rng.random()))
        x = w * (0.2 + 0.6 * float(rng.random()))
        cols = slice(max(0, int(x - r)), max(1, int(x + r)))
        land = min([float(rd.y[cols].min()) for rd in ridges] + [horizon])
        top = min(r + 0.06 * h, land - r)
        if plan.low_sun:  # sinking behind the land
            y = land - r * (0.1 + 0.5 * float(rng.random()))
        else:
            y = top + max(0.0, land - 1.6 * r - top) * float(rng.random())
        moon = "moon" in m and "sun" not in m
        discs.append(Disc(x, y, r, "moon" if moon else "sun", p.accent))
    if "orbs" in m:
        colours = (p.accent, vivid(p.far, 0.5, 0.95), p.sky[2], vivid(p.near, 0.6, 0.8))
        for k in range(int(rng.integers(3, 7))):
            r = s * (0.025 + 0.08 * float(rng.random()) ** 2)
            x = w * float(rng.random())
            y = h * 0.06 + (horizon - 0.1 * h) * float(rng.random())
            discs.append(Disc(x, y, r, "orb", colours[k % len(colours)]))

    stars = np.zeros((0, 3), dtype=np.float32)
    if "stars" in m:
        n = int(min(420, 160 * w * h / (s * s)))
        stars = np.stack(
            [
                rng.random(n, dtype=np.float32) * w,
                rng.random(n, dtype=np.float32) ** 1.3 * horizon,
                rng.random(n, dtype=np.float32) ** 3,
            ],
            axis=1,
        )
        if ridges:  # only where the sky shows
            sky_line = np.minimum.reduce([r.y for r in ridges])
            at = np.clip(stars[:, 0].astype(np.intp), 0, w - 1)
            stars = stars[stars[:, 1] < sky_line[at] - 0.01 * s]
    return Scene(w, h, p, horizon, tuple(ridges), tuple(discs), stars, water, plan.night, plan.tag)


def _skyline(rng: np.random.Generator, w: int, h: int, ground: float) -> F32:
    y = np.full(w, ground, dtype=np.float32)
    x = 0
    while x < w:
        bw = max(2, int(w * (0.025 + 0.06 * float(rng.random()))))
        top = ground - h * (0.05 + 0.22 * float(rng.random()) ** 1.5)
        y[x : x + bw] = top
        if rng.random() < 0.25:  # a spire
            cx, sw = x + bw // 2, max(1, bw // 6)
            y[max(0, cx - sw) : cx + sw] = top - h * 0.05
        x += bw
    return y


def _treeline(rng: np.random.Generator, ground: F32, s: float) -> F32:
    """Conifers standing on a ridge: the ridge becomes the min of it and many triangles."""
    w = ground.shape[0]
    n = max(3, int(w / (s * 0.03)))
    xs = rng.random(n, dtype=np.float32) * w
    tall = s * (0.05 + 0.11 * rng.random(n, dtype=np.float32))
    cols = np.arange(w, dtype=np.float32)
    base = ground[np.clip(xs.astype(np.intp), 0, w - 1)]
    tops = base - tall
    slope = 1.0 / 0.28  # height over half-width
    trees = tops[:, None] + np.abs(cols[None, :] - xs[:, None]) * slope
    return f32(np.minimum(ground, trees.min(axis=0)))


def layer_colour(scene: Scene, ridge: Ridge) -> Rgb:
    """The colour of a land layer: far to near by its tone, hazed towards the horizon
    colour the farther it is."""
    p = scene.palette
    c = mix(p.far, p.near, ridge.tone)
    return mix(c, p.sky[2], 0.35 * (1.0 - ridge.tone))  # aerial perspective
