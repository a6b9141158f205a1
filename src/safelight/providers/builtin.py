"""The builtin provider: a deterministic procedural painter (numpy + Pillow only).

It reads the prompt for a palette and motifs, lays out a small scene (sky, ridges of
mountains, hills, dunes, a skyline or trees, water, a sun or moon, orbs, stars) from a numpy
``Generator`` seeded with ``seed + image index``, and paints that scene in one of six
styles.  The finished picture is computed once, at full size; the steps then "develop" it
from noise the way a diffusion sampler does (coarse colour first, fine detail last), at
preview resolution and only when a preview is asked for.  Each step is paced to take at
least ``settings.step_delay_s`` so the product feels like a GPU model in demos.

Equal requests give byte-identical images: words are hashed with BLAKE2 (not ``hash()``,
which is salted per process) and every random draw comes from the seeded generator in a
fixed order.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from safelight.config import Settings
from safelight.errors import ProviderFailure
from safelight.providers.base import GenerationRequest, PreviewFn, ProviderInfo, StepCallback
from safelight.types import NextStep

F32 = npt.NDArray[np.float32]
Rgb = tuple[float, float, float]

STYLE_DESCRIPTIONS: dict[str, str] = {
    "watercolor": "Soft pigment washes on textured paper, with pooled edges and white glints.",
    "neon": "Glowing outlines over a dark synthwave horizon and a perspective grid.",
    "topographic": "A contour map: the scene read as terrain, tinted by height and hillshaded.",
    "aurora": "A night sky of northern-light curtains over dark silhouettes and reflections.",
    "mosaic": "Hand-cut tiles with dark grout, each tile one colour of the scene.",
    "ink": "Sumi-e brush ink on rice paper: misty ridges, dry-brush edges and a red seal.",
}
DEFAULT_STYLE = "watercolor"
MIN_SECONDS_PER_STEP = 0.02


# --------------------------------------------------------------------------- colours


def _hex(code: str) -> Rgb:
    v = int(code.lstrip("#"), 16)
    return ((v >> 16) / 255.0, ((v >> 8) & 0xFF) / 255.0, (v & 0xFF) / 255.0)


def _hsv(hue: float, sat: float, val: float) -> Rgb:
    return colorsys.hsv_to_rgb(
        (hue / 360.0) % 1.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0)
    )


def _to_hsv(c: Rgb) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*c)
    return h * 360.0, s, v


def _mix(a: Rgb, b: Rgb, t: float) -> Rgb:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _rotate(c: Rgb, degrees: float) -> Rgb:
    h, s, v = _to_hsv(c)
    return _hsv(h + degrees, s, v)


def _vivid(c: Rgb, sat: float = 0.85, val: float = 1.0) -> Rgb:
    h, s, _ = _to_hsv(c)
    return _hsv(h, max(s, sat) if s > 0.05 else 0.0, val)


def _scaled(c: Rgb, k: float) -> Rgb:
    return (c[0] * k, c[1] * k, c[2] * k)


def _vec(c: Rgb) -> F32:
    return np.array(c, dtype=np.float32)


# --------------------------------------------------------------------------- the prompt


@dataclass(frozen=True, slots=True)
class _Theme:
    kind: str  # "sky", "ground" or "both": which half of the palette it prefers to set
    sky: tuple[str, str, str]  # top, middle, horizon
    far: str
    near: str
    accent: str
    motifs: tuple[str, ...] = ()
    night: bool = False
    low_sun: bool = False


_THEMES: dict[str, _Theme] = {
    "sunset": _Theme("sky", ("#2d1b4e", "#c8467a", "#ffa24c"), "#6e3b6e", "#2b1433", "#ffd86b",
                     ("sun",), low_sun=True),
    "dawn": _Theme("sky", ("#6f8fc9", "#f1b3c0", "#ffe3b3"), "#8d8bb5", "#4a4a78", "#fff0c4",
                   ("sun",), low_sun=True),
    "night": _Theme("sky", ("#050a1c", "#12264d", "#2c4f80"), "#1b2947", "#090f22", "#f3efcf",
                    ("moon", "stars"), night=True),
    "space": _Theme("sky", ("#04020d", "#1c0b38", "#4b1b6d"), "#2a1045", "#0d0520", "#ff9de4",
                    ("stars", "orbs"), night=True),
    "storm": _Theme("sky", ("#353c48", "#626d7c", "#a3adb8"), "#566070", "#262b33", "#e6ecf3"),
    "ocean": _Theme("ground", ("#3d7bc4", "#8cc5e9", "#e4f5f8"), "#2c6d8e", "#0b3a5b", "#fff4d3",
                    ("waves",)),
    "forest": _Theme("ground", ("#86b3a3", "#c6dbbf", "#eef1d9"), "#5b8c66", "#1c4729", "#f3e7a2",
                     ("trees",)),
    "desert": _Theme("ground", ("#5f97cf", "#efd5a5", "#f8e8c6"), "#d39a5b", "#a15e2b", "#fff2cf",
                     ("dunes", "sun")),
    "snow": _Theme("ground", ("#a6c0dc", "#d9e6f2", "#f6f9fc"), "#b4c6db", "#7790ae", "#ffffff",
                   ("mountains",)),
    "city": _Theme("both", ("#0c0621", "#3b0f5c", "#ff4fa8"), "#241446", "#0c0719", "#37f0ff",
                   ("city",), night=True),
    "garden": _Theme("ground", ("#9bd2ef", "#e7f2cf", "#fbe4eb"), "#8acd7c", "#3b8c4c", "#ff6c9f",
                     ("orbs", "hills")),
    "fire": _Theme("both", ("#1c0504", "#7d1b0b", "#ff6b1c"), "#4b100a", "#150404", "#ffd43f",
                   ("mountains", "stars")),
    "autumn": _Theme("ground", ("#7fa3c7", "#f1cf9e", "#fbe7c8"), "#c7743a", "#7a2e1b", "#ffd27a",
                     ("trees", "hills")),
}  # fmt: skip

_THEME_WORDS: dict[str, str] = {
    word: theme
    for theme, words in {
        "sunset": "sunset sundown dusk twilight evening",
        "dawn": "dawn sunrise morning daybreak",
        "night": "night midnight moon moonlight moonlit nocturnal starry",
        "space": "space galaxy cosmos cosmic nebula universe planet planets",
        "storm": "storm stormy rain rainy fog foggy mist misty cloudy thunder",
        "ocean": "ocean sea beach lake river coast waves bay harbor harbour island",
        "forest": "forest woods woodland jungle trees pine pines",
        "desert": "desert dune dunes sand sahara canyon",
        "snow": "snow snowy winter ice icy frost frozen glacier arctic",
        "city": "city cyberpunk skyline street downtown metropolis",
        "garden": "garden flower flowers meadow spring bloom blossom roses",
        "fire": "fire flame flames lava volcano inferno ember embers burning",
        "autumn": "autumn fall harvest october",
    }.items()
    for word in words.split()
}

_MOTIF_WORDS: dict[str, str] = {
    word: motif
    for motif, words in {
        "sun": "sun sunny solar summer",
        "moon": "moon lunar moonlight moonlit",
        "stars": "star stars starry starlight constellation constellations",
        "mountains": "mountain mountains peak peaks alps alpine cliff cliffs volcano ridge",
        "hills": "hill hills valley countryside meadow",
        "waves": "wave waves water surf tide sea ocean lake river",
        "trees": "tree trees forest pine pines woods",
        "orbs": "orb orbs bubble bubbles circle circles planet planets balloon balloons "
        "lantern lanterns dots",
        "dunes": "dune dunes sand",
        "city": "city skyline building buildings tower towers",
    }.items()
    for word in words.split()
}

_COLOUR_HUES: dict[str, float] = {
    "red": 0, "scarlet": 5, "crimson": 350, "orange": 28, "amber": 40, "gold": 46, "golden": 46,
    "yellow": 55, "lime": 90, "green": 130, "emerald": 145, "teal": 175, "turquoise": 172,
    "cyan": 188, "blue": 220, "azure": 210, "indigo": 250, "violet": 272, "purple": 285,
    "magenta": 310, "pink": 335, "rose": 345,
}  # fmt: skip

_LAND = ("mountains", "hills", "dunes", "city", "trees", "waves")


@dataclass(frozen=True, slots=True)
class Palette:
    sky: tuple[Rgb, Rgb, Rgb]  # top, middle, horizon
    far: Rgb
    near: Rgb
    accent: Rgb


@dataclass(frozen=True, slots=True)
class Plan:
    """What the prompt asks for, independent of size and seed."""

    palette: Palette
    motifs: frozenset[str]
    night: bool
    low_sun: bool
    tag: int  # a stable hash of the prompt, for small prompt-driven variations


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.lower())  # letters of any script


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _hashed_palette(words: list[str], tag: int) -> Palette:
    """A harmonious palette for prompts that name no theme: hues from the words' hashes."""
    hues = [_stable_hash(w) % 360 for w in words if len(w) > 2] or [tag % 360]
    h1 = float(hues[0])
    h2 = float(hues[1]) if len(hues) > 1 else h1 + 40 + (tag >> 9) % 140
    return Palette(
        sky=(_hsv(h2, 0.45, 0.55), _hsv(h2 + 20, 0.28, 0.86), _hsv(h1, 0.16, 0.98)),
        far=_hsv(h1, 0.35, 0.66),
        near=_hsv(h1 + 10, 0.55, 0.30),
        accent=_hsv(h1 + 180, 0.55, 1.0),
    )


def read_prompt(prompt: str, negative_prompt: str = "") -> Plan:
    """Turn the prompt into a palette and motifs (exposed for tests and docs)."""
    words = _words(prompt)
    tag = _stable_hash(" ".join(prompt.lower().split()))
    themes = list(dict.fromkeys(_THEME_WORDS[w] for w in words if w in _THEME_WORDS))
    if themes:
        sky_t = _THEMES[next((t for t in themes if _THEMES[t].kind != "ground"), themes[0])]
        ground_t = _THEMES[next((t for t in themes if _THEMES[t].kind != "sky"), themes[0])]
        far, near = _hex(ground_t.far), _hex(ground_t.near)
        if sky_t.night and not ground_t.night:
            far = _mix(_scaled(far, 0.45), _hex(sky_t.far), 0.5)
            near = _mix(_scaled(near, 0.35), _hex(sky_t.near), 0.5)
        palette = Palette(
            (_hex(sky_t.sky[0]), _hex(sky_t.sky[1]), _hex(sky_t.sky[2])),
            far,
            near,
            _hex(sky_t.accent),
        )
        night, low_sun = sky_t.night, sky_t.low_sun
        motifs = {m for t in themes for m in _THEMES[t].motifs}
    else:
        palette, night, low_sun, motifs = _hashed_palette(words, tag), False, False, set()
    palette = _apply_colours(palette, [_COLOUR_HUES[w] for w in words if w in _COLOUR_HUES])
    # A small prompt-specific hue turn, so two prompts never paint exactly alike.
    turn = ((tag >> 20) % 2001 / 1000.0 - 1.0) * 9.0
    palette = Palette(
        (
            _rotate(palette.sky[0], turn),
            _rotate(palette.sky[1], turn),
            _rotate(palette.sky[2], turn),
        ),
        _rotate(palette.far, turn),
        _rotate(palette.near, turn),
        _rotate(palette.accent, turn),
    )
    motifs |= {_MOTIF_WORDS[w] for w in words if w in _MOTIF_WORDS}
    if night and "sun" in motifs and not any(_MOTIF_WORDS.get(w) == "sun" for w in words):
        motifs.discard("sun")
    if "sun" in motifs:
        motifs.discard("moon")
    if not motifs & set(_LAND) and "space" not in themes:
        motifs.add(("hills", "mountains", "waves", "hills", "dunes")[tag % 5])
    if not motifs & {"sun", "moon", "orbs"}:
        motifs.add(("sun", "orbs", "moon" if night else "sun")[(tag >> 4) % 3])
    motifs -= {_MOTIF_WORDS[w] for w in _words(negative_prompt) if w in _MOTIF_WORDS}
    return Plan(palette, frozenset(motifs), night, low_sun, tag)


def _apply_colours(p: Palette, hues: list[float]) -> Palette:
    if not hues:
        return p

    def tint(c: Rgb, hue: float, amount: float, min_sat: float) -> Rgb:
        _, s, v = _to_hsv(c)
        return _mix(c, _hsv(hue, max(s, min_sat), v), amount)

    first, last = hues[0], hues[-1] if len(hues) > 1 else hues[0]
    return Palette(
        (p.sky[0], tint(p.sky[1], first, 0.35, 0.3), p.sky[2]),
        tint(p.far, first, 0.85, 0.4),
        tint(p.near, first, 0.85, 0.5),
        _hsv(last, max(_to_hsv(p.accent)[1], 0.6), 1.0),
    )


# --------------------------------------------------------------------------- the scene


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


def _fbm1d(rng: np.random.Generator, n: int, cells: int, octaves: int) -> F32:
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
        peaks = _fbm1d(rng, w, 3, 5)
        ridges.append(Ridge(base(0.0) - h * (0.06 + 0.30 * peaks**1.6), "mountains", 0.0))
        near = _fbm1d(rng, w, 2, 5)
        ridges.append(Ridge(base(0.05) - h * (0.02 + 0.17 * near**1.4), "mountains", 0.4))
    if "city" in m:
        ridges.append(Ridge(_skyline(rng, w, h, base(0.02)), "city", 0.55))
    if "dunes" in m:
        for k, tone in enumerate((0.35, 0.75)):
            dune = _fbm1d(rng, w, 2 + k, 2)
            ridges.append(Ridge(base(0.03 + 0.14 * k) - h * 0.09 * dune, "dunes", tone))
    if "hills" in m or ("trees" in m and not ridges):
        hill = _fbm1d(rng, w, 2, 3)
        ridges.append(Ridge(base(0.12) - h * (0.02 + 0.08 * hill), "hills", 0.8))
    if "trees" in m:
        last = ridges[-1]
        ridges[-1] = Ridge(_treeline(rng, last.y, s), last.kind, last.tone)
    if water and not ridges:  # a distant shore, so the sea meets something
        shore = _fbm1d(rng, w, 3, 4)
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
        colours = (p.accent, _vivid(p.far, 0.5, 0.95), p.sky[2], _vivid(p.near, 0.6, 0.8))
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
    return _f32(np.minimum(ground, trees.min(axis=0)))


# --------------------------------------------------------------------------- painting helpers

Window = tuple[slice, slice]


class _Canvas:
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
            out += np.float32(0.5**o) * _resize(grid, ww, wh)
            total += 0.5**o
        out /= np.float32(total)
        if (ww, wh) != (self.w, self.h):
            out = _resize(out, self.w, self.h)
        return np.clip(out, 0.0, 1.0)

    def rows_below(self, ridge: F32, pad: float = 0.0) -> slice:
        top = int(max(0.0, float(ridge.min()) - pad - 1.0))
        return slice(min(top, self.h), self.h)

    def cover(
        self, ridge: F32, soft: float = 1.0, shift: F32 | float = 0.0, rows: slice = slice(None)
    ) -> F32:
        """Anti-aliased coverage of the land below ``ridge`` (0 above, 1 below) on ``rows``;
        an array ``shift`` must already be cut to ``rows``."""
        return _f32(np.clip((self.y[rows] + shift - ridge[None, :]) / np.float32(soft) + 0.5, 0, 1))

    def window(self, cx: float, cy: float, reach: float) -> tuple[Window, F32]:
        """The slices of a square around (cx, cy) and each pixel's distance to it."""
        x0, x1 = min(self.w, max(0, int(cx - reach))), min(self.w, max(0, int(cx + reach) + 2))
        y0, y1 = min(self.h, max(0, int(cy - reach))), min(self.h, max(0, int(cy + reach) + 2))
        dx = self.x[:, x0:x1] - np.float32(cx)
        dy = self.y[y0:y1] - np.float32(cy)
        return (slice(y0, y1), slice(x0, x1)), np.sqrt(dx * dx + dy * dy)

    def sky(self) -> F32:
        """The sky gradient, one colour per row, as (h, 1, 3)."""
        top, mid, low = (_vec(c) for c in self.scene.palette.sky)
        t = np.clip(self.y / np.float32(max(self.scene.horizon, 1.0)), 0.0, 1.0)[..., None]
        upper = top + (mid - top) * np.clip(t * 2.0, 0.0, 1.0)
        lower = mid + (low - mid) * np.clip(t * 2.0 - 1.0, 0.0, 1.0)
        return _f32(np.where(t < 0.5, upper, lower))

    def stars(
        self, target: F32, radius: float, colour: Rgb | None = None, gain: float = 1.0
    ) -> None:
        """Add soft star points to ``target`` ((h, w) or, with ``colour``, (h, w, 3))."""
        tint = _vec(colour) if colour is not None else None
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


def _f32(a: object) -> F32:
    """``a`` as a float32 array (no copy when it already is one; also narrows types)."""
    return np.asarray(a, dtype=np.float32)


def _resize(a: F32, w: int, h: int, how: Image.Resampling = Image.Resampling.BICUBIC) -> F32:
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize((w, h), how), dtype=np.float32)


def _blur(a: F32, sigma: float) -> F32:
    """A cheap, smooth blur of a 2-D float field: box-reduce, then bicubic back up."""
    if sigma < 0.6 or a.size == 0:
        return a
    h, w = a.shape
    small = _resize(a, max(1, round(w / (2 * sigma))), max(1, round(h / (2 * sigma))),
                    Image.Resampling.BOX)  # fmt: skip
    return _resize(small, w, h)


def _smooth(a: F32, lo: float, hi: float) -> F32:
    t = np.clip((a - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    return _f32(t * t * (3.0 - 2.0 * t))


def _lerp(img: F32, colour: F32, alpha: F32) -> None:
    """img += (colour - img) * alpha, in place; ``alpha`` has no channel axis."""
    img += (colour - img) * alpha[..., None]


def _layer_colour(scene: Scene, ridge: Ridge) -> Rgb:
    p = scene.palette
    c = _mix(p.far, p.near, ridge.tone)
    return _mix(c, p.sky[2], 0.35 * (1.0 - ridge.tone))  # aerial perspective


def _lit_windows(cv: _Canvas, ridge: Ridge, rows: slice) -> F32:
    """Lit windows of a night skyline on ``rows``, as a 0/1 mask."""
    cell = np.float32(max(2.0, cv.s * 0.012))
    gx, gy = np.floor(cv.x / cell), np.floor(cv.y[rows] / cell)
    lit = ((gx * 73.0 + gy * 151.0 + cv.scene.tag % 997) * 0.618) % 1.0 > 0.78
    inner = ((cv.x % cell) < cell * 0.6) & ((cv.y[rows] % cell) < cell * 0.55)
    below = cv.y[rows] > ridge.y[None, :] + cell
    return _f32(lit & inner & below)


# --------------------------------------------------------------------------- styles


def _flat(cv: _Canvas) -> F32:
    """A clean, flat rendering of the scene: the picture mosaic cuts into tiles."""
    sc, p = cv.scene, cv.scene.palette
    img = np.broadcast_to(cv.sky(), (cv.h, cv.w, 3)).copy()
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, d.r * (9.0 if d.kind == "sun" else 1.0) + 2.0)
        part, col = img[win], _vec(d.colour)
        if d.kind == "sun":
            part += col * (0.45 * np.exp(-dist / np.float32(2.2 * d.r)))[..., None]
        if d.kind == "orb":
            col = col * (1.0 - 0.3 * np.clip(dist / np.float32(d.r), 0.0, 1.0) ** 2)[..., None]
        _lerp(part, col, np.clip(np.float32(d.r + 0.5) - dist, 0.0, 1.0))
    cv.stars(img, 0.9 * cv.px, _mix(p.accent, (1.0, 1.0, 1.0), 0.6))
    for ridge in sc.ridges:
        rows = cv.rows_below(ridge.y)
        part, cov = img[rows], cv.cover(ridge.y, rows=rows)
        depth = np.clip((cv.y[rows] - ridge.y[None, :]) / np.float32(0.3 * cv.h), 0.0, 1.0)
        if ridge.kind == "water":
            low, deep = _vec(p.sky[2]), _vec(p.near)
            colour = low + (deep - low) * (depth**0.6)[..., None]
        else:
            colour = _vec(_layer_colour(sc, ridge)) * (1.0 - 0.22 * depth)[..., None]
            if ridge.kind == "city" and sc.night:
                colour += _lit_windows(cv, ridge, rows)[..., None] * _vec(p.accent)
        _lerp(part, colour, cov)
    return img


def _watercolor(cv: _Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    paper = _vec(_hex("#f8f3e9"))
    img = np.broadcast_to(paper, (cv.h, cv.w, 3)).copy()
    reach = 0.02 * cv.s
    wobble = (cv.noise(5.0, 4) - 0.5) * np.float32(2 * reach)
    seam = (cv.noise(9.0, 2) - 0.5) * np.float32(0.014 * cv.s)
    pool, bloom = cv.noise(3.0, 3), cv.noise(1.5, 3)
    soft = 1.2 * cv.px
    everywhere: Window = (slice(None), slice(None))

    def wash(win: Window, region: F32, colour: F32, opacity: float) -> None:
        """Glaze pigment over the paper (multiply), darker where the wash dried: its edge."""
        edge = np.clip(region - _blur(region, 0.007 * cv.s), 0.0, 1.0)
        alpha = region * (np.float32(opacity) * (0.75 + 0.4 * pool[win]) + 1.3 * edge)
        img[win] *= 1.0 - np.clip(alpha, 0.0, 1.0)[..., None] * (1.0 - np.clip(colour, 0.0, 1.0))

    def varied(colour: Rgb, rows: slice) -> F32:
        """Wet-in-wet: the pigment drifts in hue and strength across the wash."""
        a, b = _vec(_rotate(colour, -22)), _vec(_rotate(_scaled(colour, 0.85), 24))
        return a + (b - a) * bloom[rows, :, None]

    first = sc.ridges[0] if sc.ridges else None
    sky_rows = slice(0, cv.h if first is None else min(cv.h, int(first.y.max() + reach) + 2))
    land = np.zeros((sky_rows.stop, cv.w), dtype=np.float32)
    if first is not None:
        land = cv.cover(first.y, soft, wobble[sky_rows], sky_rows)
    # The sky, with clouds and stars left as bare paper (masking fluid).
    clouds = _smooth(cv.noise(2.2, 4, sx=0.6, sy=1.6)[sky_rows], 0.58, 0.8)
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
            wash(win, halo * (1.0 - disc), _vec(d.colour), 0.45)
        wash(win, disc, _vec(d.colour), 0.35 if d.kind == "moon" else 0.8)
    for k, ridge in enumerate(sc.ridges):
        rows = cv.rows_below(ridge.y, reach)
        region = cv.cover(ridge.y, soft, wobble[rows], rows)
        if k + 1 < len(sc.ridges):  # stop at the next wash, leaving gaps and overlaps
            nxt = sc.ridges[k + 1].y
            region *= 1.0 - cv.cover(nxt, soft, wobble[rows] + seam[rows], rows)
        depth = np.clip((cv.y[rows] - ridge.y[None, :]) / np.float32(0.3 * cv.h), 0.0, 1.0)
        if ridge.kind == "water":
            glints = _smooth(cv.noise(2.0, 3, sx=0.5, sy=28.0)[rows], 0.66, 0.76) * 0.7
            top, deep = _vec(p.sky[1]), _vec(p.near)
            colour = top + (deep - top) * (depth**0.6)[..., None]
            wash((rows, slice(None)), region * (1.0 - glints), colour, 0.9)
            continue
        body = varied(_layer_colour(sc, ridge), rows)
        colour = body + (_vec(p.sky[1]) - body) * (0.3 * depth)[..., None]
        wash((rows, slice(None)), region, colour, 0.75 + 0.25 * ridge.tone)
    if not sc.night and len(sc.stars):  # spatter
        spots = np.zeros((cv.h, cv.w), dtype=np.float32)
        cv.stars(spots, 0.9 * cv.px)
        wash(everywhere, np.clip(spots, 0.0, 1.0), _vec(p.near), 0.7)
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


def _neon(cv: _Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    hz = sc.horizon
    hue, hue2 = _to_hsv(p.accent)[0], _to_hsv(p.sky[1])[0]
    if abs((hue - hue2 + 180) % 360 - 180) < 60:
        hue2 = hue + 150
    ca, cb = _vec(_hsv(hue, 0.85, 1.0)), _vec(_hsv(hue2, 0.8, 1.0))
    dark = _vec(_scaled(_vivid(p.sky[0], 0.6, 1.0), 0.10))
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
            top = _vec(_hsv(50, 0.75, 1.0))
            light[win] += (disc * cut)[..., None] * (top + (ca - top) * v[..., None])
        else:
            ring = np.exp(-(((dist - np.float32(d.r)) / width) ** 2))
            light[win] += ring[..., None] * (ca if d.kind == "moon" else _vec(_vivid(d.colour)))
    cv.stars(light, 0.8 * cv.px, _mix(_hsv(hue2, 0.3, 1.0), (1.0, 1.0, 1.0), 0.5))
    land = [r for r in sc.ridges if r.kind != "water"]
    for i, ridge in enumerate(land):
        rows = slice(
            max(0, int(ridge.y.min() - 6 * width)), min(cv.h, int(ridge.y.max() + 6 * width) + 1)
        )
        fill = slice(rows.start, max(rows.start, min(rows.stop, int(hz) + 1)))
        cov = cv.cover(ridge.y, rows=fill) * (cv.y[fill] < hz)
        _lerp(img[fill], dark * 0.6, cov)
        light[fill] *= (1.0 - cov)[..., None]
        slope = np.sqrt(1.0 + np.gradient(ridge.y) ** 2)[None, :]
        line = np.exp(-((np.abs(cv.y[rows] - ridge.y[None, :]) / slope / width) ** 2))
        col = ca + (cb - ca) * np.float32(i / max(1, len(land) - 1))
        light[rows] += line[..., None] * col
        if ridge.kind == "city":
            light[fill] += (_lit_windows(cv, ridge, fill) * cov)[..., None] * cb * 0.7
    for c in range(3):
        glow = _blur(light[..., c], 2.5 * cv.px) * 0.8 + _blur(light[..., c], 12.0 * cv.px) * 0.9
        img[..., c] += light[..., c] + glow
    return _f32(1.0 - np.exp(-img * 1.25))  # a soft shoulder: glows saturate instead of clipping


def _topographic(cv: _Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    height = 0.55 * cv.noise(1.6, 5)
    for ridge in sc.ridges:
        if ridge.kind != "water":
            # Pad by the blur's full reach (box cell 2 sigma, bicubic spans 2 cells).
            rows = cv.rows_below(ridge.y, 0.3 * cv.s)
            height[rows] += 0.12 * _blur(cv.cover(ridge.y, rows=rows), 0.05 * cv.s)
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, 4.0 * d.r)
        bump = 0.45 if d.kind != "orb" else 0.25
        height[win] += bump * np.exp(-((dist / np.float32(1.6 * d.r)) ** 2))
    lo, hi = float(height.min()), float(height.max())
    height = (height - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
    gy, gx = np.gradient(height)
    relief = np.float32(cv.s * 0.06)
    shade = np.clip(0.85 - (gx * 0.6 + gy * 0.8) * relief, 0.55, 1.25)
    cream = _hex("#f4eedf")
    # A classic hypsometric tint (lowland green, tan, brown, snow) leaning to the palette.
    stops = [(0.0, _mix(_hex("#9cc18f"), p.near, 0.3)), (0.35, _mix(_hex("#e3d9a3"), p.far, 0.25)),
             (0.7, _mix(_hex("#c0915f"), p.accent, 0.2)), (0.92, cream), (1.0, cream)]  # fmt: skip
    ramp = np.linspace(0.0, 1.0, 256)
    pos = [q for q, _ in stops]
    lut = _f32(np.stack([np.interp(ramp, pos, [c[i] for _, c in stops]) for i in range(3)], -1))
    img = _f32(lut[(height * 255.0).astype(np.uint8)] * shade[..., None])
    if sc.water:
        sea = np.float32(0.28)
        wet = _smooth(sea - height, -0.004, 0.004)
        shallow = _vec(_mix((0.70, 0.85, 0.93), p.sky[1], 0.15))
        deep = _vec(_mix((0.38, 0.60, 0.80), p.sky[0], 0.15))
        water = shallow + (deep - shallow) * np.clip((sea - height) / sea, 0.0, 1.0)[..., None]
        _lerp(img, water, wet)
    # Contours: every level a hairline, every fifth an index contour.  Distance to the
    # nearest level in pixels is the level distance over the gradient's size.
    levels = np.float32(22.0)
    f = height * levels
    grad = np.sqrt(gx * gx + gy * gy) * levels + np.float32(1e-4)
    index = (np.abs(np.round(f)) % 5) == 0
    thick = np.where(index, np.float32(1.4 * cv.px), np.float32(0.6 * cv.px))
    line = np.clip(1.0 - np.abs(f - np.round(f)) / grad / thick, 0.0, 1.0)
    ink = _vec(_mix(p.near, (0.18, 0.11, 0.06), 0.6))
    _lerp(img, ink, line * np.where(index, np.float32(0.85), np.float32(0.55)))
    spacing = np.float32(cv.s / 6.0)
    gridx = np.abs(cv.x / spacing - np.round(cv.x / spacing)) * spacing
    gridy = np.abs(cv.y / spacing - np.round(cv.y / spacing)) * spacing
    graticule = np.clip(1.0 - np.minimum(gridx, gridy) / np.float32(0.5 * cv.px), 0.0, 1.0)
    _lerp(img, _vec((0.3, 0.4, 0.5)), graticule * 0.25)
    _map_frame(cv, img, ink, _vec(cream))
    return img


def _map_frame(cv: _Canvas, img: F32, ink: F32, paper: F32) -> None:
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
        _lerp(part, paper, (edge < margin - cv.px).astype(np.float32))
        _lerp(
            part,
            ink,
            np.clip(1.0 - np.abs(edge - np.float32(margin)) / np.float32(0.9 * cv.px), 0, 1),
        )


def _aurora(cv: _Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    hz = sc.horizon
    t = np.clip(cv.y / np.float32(hz), 0.0, 1.0)[..., None]
    top, low = (
        _vec((0.005, 0.01, 0.04)),
        _vec(_mix((0.02, 0.09, 0.14), _scaled(p.sky[1], 0.2), 0.4)),
    )
    img = np.broadcast_to(top + (low - top) * t**1.5, (cv.h, cv.w, 3)).copy()
    low_hue = 150.0 + ((sc.tag >> 7) % 41 - 20)
    h_mid, s_mid, _ = _to_hsv(p.sky[1])
    up_hue = h_mid if s_mid > 0.25 and abs((h_mid - low_hue + 180) % 360 - 180) > 50 else 290.0
    green, upper = _vec(_hsv(low_hue, 0.8, 1.0)), _vec(_hsv(up_hue, 0.7, 0.95))
    # Curtains: a wavy lower edge per band, rays that fade upwards, split into the
    # light near the edge (green) and the light higher up (the palette's hue).
    sky = slice(0, min(cv.h, int(hz) + 1))
    near_edge = np.zeros((sky.stop, cv.w), dtype=np.float32)
    high = np.zeros_like(near_edge)
    for k in range(3):
        base = hz * (0.35 + 0.18 * k) + (_fbm1d(cv.rng, cv.w, 2, 3) - 0.5) * hz * 0.35
        rays = _fbm1d(cv.rng, cv.w, max(4, int(cv.w / cv.s * 18)), 2) ** 2.5 * 1.6 + 0.15
        tall = np.float32(hz * (0.25 + 0.12 * float(cv.rng.random())))
        above = np.clip(base[None, :] - cv.y[sky], 0.0, None)
        under = np.clip(cv.y[sky] - base[None, :], 0.0, None)
        band = np.exp(-above / tall - (under / np.float32(0.02 * cv.h)) ** 2)
        band *= rays[None, :] * np.float32(0.9 - 0.2 * k)
        mix = np.clip(above / tall, 0.0, 1.0)
        near_edge += band * (1.0 - mix)
        high += band * mix
    near_edge, high = _blur(near_edge, 1.2 * cv.px), _blur(high, 1.2 * cv.px)
    img[sky] += 0.9 * (near_edge[..., None] * green + high[..., None] * upper)
    stars = np.zeros((cv.h, cv.w), dtype=np.float32)
    cv.stars(stars, 0.8 * cv.px)
    stars[sky] *= 1.0 - np.clip((near_edge + high) * 0.9, 0.0, 1.0)
    img += np.clip(stars, 0.0, 1.0)[..., None] * _vec((0.9, 0.95, 1.0))
    for d in sc.discs:
        win, dist = cv.window(d.x, d.y, d.r * (6.0 if d.kind == "orb" else 12.0))
        col = _vec(_mix(d.colour, (1.0, 1.0, 0.95), 0.5))
        glow = np.exp(-dist / np.float32(d.r * (1.5 if d.kind == "orb" else 3.0))) * 0.25
        img[win] += glow[..., None] * col
        _lerp(
            img[win],
            col * (0.9 if d.kind != "orb" else 0.55),
            np.clip(np.float32(d.r + 0.5) - dist, 0, 1),
        )
    rim_colour = (near_edge.mean(0)[:, None] * green + high.mean(0)[:, None] * upper)[None, ...]
    sil = _vec(_scaled(p.near, 0.12))
    for ridge in sc.ridges:
        rows = cv.rows_below(ridge.y)
        cov = cv.cover(ridge.y, rows=rows)
        if ridge.kind == "water":  # a rippled mirror of everything above it
            src = np.clip(2 * hz - cv.y[rows, 0], 0, cv.h - 1).astype(np.intp)
            ripple = cv.noise(2.0, 3, sx=0.3, sy=12.0)[rows]
            sway = (_fbm1d(cv.rng, len(src), max(4, len(src) // 3), 2) - 0.5) * 0.03 * cv.s
            cols = np.clip(np.arange(cv.w)[None, :] + sway.astype(np.intp)[:, None], 0, cv.w - 1)
            fade = np.exp(-(cv.y[rows] - np.float32(hz)) / np.float32(0.5 * cv.h))
            mirror = (
                img[src[:, None], cols]
                * (fade * (0.3 + 0.5 * _smooth(ripple, 0.35, 0.7)))[..., None]
            )
            _lerp(img[rows], mirror, cov)
            continue
        below = np.clip(cv.y[rows] - ridge.y[None, :], 0.0, None)
        rim = np.exp(-below / np.float32(3.0 * cv.px)) * 0.35
        colour = sil * np.float32(1.0 + 1.5 * (1.0 - ridge.tone)) + rim[..., None] * rim_colour
        _lerp(img[rows], colour, cov)
    return img


def _mosaic(cv: _Canvas) -> F32:
    """Voronoi tiles on a jittered grid.  The cells are found at most 1024 px wide and
    scaled up: the distance-to-edge field is smooth, so bilinear scaling keeps the grout
    crisp."""
    base = _flat(cv)
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
            _resize(gap, cv.w, cv.h, Image.Resampling.BILINEAR),
            _resize(centre, cv.w, cv.h, Image.Resampling.BILINEAR),
        )
        best = best[(np.arange(cv.h) // f)[:, None], (np.arange(cv.w) // f)[None, :]]
    px_ = np.clip(ptx.reshape(-1), 0, cv.w - 1).astype(np.intp)
    py_ = np.clip(pty.reshape(-1), 0, cv.h - 1).astype(np.intp)
    tiles = base[py_, px_]
    grey = tiles.mean(-1, keepdims=True)
    tiles = (grey + (tiles - grey) * 1.25) * (
        0.9 + 0.2 * cv.rng.random((gh * gw, 1), dtype=np.float32)
    )
    img = _f32(
        tiles[best] * (1.05 - 0.10 * np.clip(centre / np.float32(0.7 * cell), 0, 1))[..., None]
    )
    grout = np.clip(1.0 - (gap - np.float32(0.035 * cell)) / np.float32(cv.px), 0.0, 1.0)
    _lerp(img, _vec((0.16, 0.15, 0.14)), grout)
    return img


def _ink(cv: _Canvas) -> F32:
    sc, p = cv.scene, cv.scene.palette
    paper = _vec(_hex("#f2ebdb"))
    img = paper * (0.95 + 0.06 * cv.noise(6.0, 2, sx=8.0, sy=0.7))[..., None]  # fibres
    ink = _vec(_hsv(_to_hsv(p.near)[0], 0.3, 0.09))
    vermilion = _vec(_mix((0.80, 0.20, 0.13), p.accent, 0.15))
    dry = cv.noise(3.0, 3, sx=6.0, sy=0.8)
    for d in sc.discs:
        reach = max(d.r, 0.05 * cv.s)
        win, dist = cv.window(d.x, d.y, reach * 1.4)
        if d.kind == "orb":  # an enso: one brush ring, left open
            ang = np.arctan2(cv.y[win[0]] - np.float32(d.y), cv.x[:, win[1]] - np.float32(d.x))
            thick = np.float32(reach) * (0.08 + 0.16 * (np.sin(ang * 0.5 + d.x) * 0.5 + 0.5))
            ring = np.clip(1.0 - np.abs(dist - np.float32(reach)) / thick, 0.0, 1.0) * (ang < 2.6)
            _lerp(img[win], ink, ring * (0.75 + 0.25 * dry[win]))
            continue
        col = vermilion if d.kind == "sun" else _vec((0.55, 0.55, 0.55))
        cov = np.clip((np.float32(d.r) - dist) / np.float32(cv.px) + 0.5, 0.0, 1.0)
        _lerp(img[win], col, cov * (0.8 + 0.2 * dry[win]) * (0.85 if d.kind == "sun" else 0.25))
    for ridge in sc.ridges:
        rows = cv.rows_below(ridge.y, 2.0 * cv.px)
        depth = np.clip(cv.y[rows] - ridge.y[None, :], 0.0, None)
        cov = cv.cover(ridge.y, 1.2 * cv.px, (dry[rows] - 0.5) * np.float32(2.0 * cv.px), rows)
        if ridge.kind == "water":
            streaks = _smooth(cv.noise(2.0, 3, sx=0.25, sy=14.0)[rows], 0.62, 0.72)
            fade = np.exp(-depth / np.float32(0.4 * cv.h))
            _lerp(img[rows], ink, cov * streaks * 0.45 * fade)
            continue
        # A wash that thins into mist below the ridge, and a dry-brush stroke along it.
        density = np.float32(0.18 + 0.72 * ridge.tone**1.3)
        mist = np.exp(-depth / np.float32((0.05 + 0.12 * ridge.tone) * cv.h))
        wash = cov * density * (0.12 + 0.88 * mist) * (0.85 + 0.3 * dry[rows])
        if sc.water:  # the land ends at the shore; the water is paper and brush streaks
            wash *= np.clip(np.float32(sc.horizon) - cv.y[rows] + 0.5, 0.0, 1.0)
        stroke = np.exp(-depth / np.float32((1.5 + 2.5 * ridge.tone) * cv.px)) * cov
        stroke *= min(1.0, float(density) + 0.3) * _smooth(dry[rows], 0.25, 0.5)
        _lerp(img[rows], ink, 1.0 - (1.0 - 0.9 * np.clip(wash, 0.0, 1.0)) * (1.0 - stroke))
    _seal(cv, img, vermilion, paper)
    return img


def _seal(cv: _Canvas, img: F32, red: F32, paper: F32) -> None:
    """The artist's seal: a red square with a glyph (from the prompt's hash) cut into it."""
    size = max(4, int(cv.s * 0.07))
    x0, y0 = cv.w - size - int(cv.s * 0.05), cv.h - size - int(cv.s * 0.05)
    if x0 <= 0 or y0 <= 0:
        return
    bits = np.array([(cv.scene.tag >> k) & 1 for k in range(16)], dtype=np.float32)
    inner = size - 2 * (size // 6)
    carve = _resize(bits.reshape(4, 4), inner, inner, Image.Resampling.NEAREST) > 0.5
    seal = img[y0 : y0 + size, x0 : x0 + size]
    seal[...] = red * 0.92
    m = size // 6
    seal[m : m + inner, m : m + inner] += carve[..., None] * ((paper - red) * 0.9)


_STYLES: dict[str, Callable[[_Canvas], F32]] = {
    "watercolor": _watercolor,
    "neon": _neon,
    "topographic": _topographic,
    "aurora": _aurora,
    "mosaic": _mosaic,
    "ink": _ink,
}


def render(request: GenerationRequest, index: int) -> Image.Image:
    """Paint image ``index`` of ``request`` at full size (deterministic)."""
    rng = np.random.default_rng(request.seed + index)
    plan = read_prompt(request.prompt, request.negative_prompt)
    scene = build_scene(plan, request.width, request.height, rng)
    img = _STYLES[request.style](_Canvas(scene, rng))
    # Half a level of dither: smooth gradients (neon, aurora skies) without banding.
    img += (rng.random((request.height, request.width, 1), dtype=np.float32) - 0.5) / 255.0
    np.clip(img, 0.0, 1.0, out=img)
    return Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- developing


class _Develop:
    """The noise -> picture schedule for previews, at preview size, computed on demand.

    Like a diffusion sampler: early steps are mostly noise with the picture's coarse colour
    showing through, the middle steps a blurred composition, the last steps the detail."""

    def __init__(self, final: Image.Image, max_side: int, seed: int) -> None:
        w, h = final.size
        scale = min(1.0, max_side / max(w, h))
        self.size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = final.resize(self.size, Image.Resampling.BOX) if self.size != final.size else final
        self.target = np.asarray(small, dtype=np.float32) / np.float32(255.0)
        rng = np.random.default_rng([seed, 0x5AFE])
        blobs = np.stack(
            [_resize(rng.random((5, 5), dtype=np.float32), *self.size) for _ in range(3)], axis=-1
        )
        grain = rng.standard_normal((self.size[1], self.size[0], 3), dtype=np.float32)
        self.noise = np.clip(0.45 + 0.35 * (blobs - 0.5) + 0.18 * grain, 0.0, 1.0)

    def state(self, step: int, total: int) -> Image.Image:
        if step >= total:
            out = self.target
        else:
            t = step / total
            radius = (1.0 - t) ** 2 * 0.05 * max(self.size)
            structure = np.stack([_blur(self.target[..., c], radius) for c in range(3)], axis=-1)
            out = structure + (self.noise - structure) * np.float32((1.0 - t) ** 2)
        return Image.fromarray((np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


class BuiltinProvider:
    """The default provider: procedural pictures that develop over ``steps`` steps."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._info = ProviderInfo(
            name="builtin",
            title="Safelight builtin painter",
            styles=tuple(STYLE_DESCRIPTIONS),
            default_style=DEFAULT_STYLE,
            style_descriptions=dict(STYLE_DESCRIPTIONS),
            seconds_per_step=max(settings.step_delay_s, MIN_SECONDS_PER_STEP),
        )

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        if request.style not in _STYLES:
            raise ProviderFailure(
                f"Unknown style {request.style!r}; choose one of {', '.join(_STYLES)}.",
                code="unknown_style",
                retryable=False,
                next_steps=(NextStep.EDIT_PROMPT,),
            )
        total, count = max(1, request.steps), max(1, request.num_images)
        delay = self._settings.step_delay_s
        images: list[Image.Image] = []
        develop: _Develop | None = None
        mark = time.monotonic()
        for step in range(1, total + 1):
            # Spread the full-size renders over the first steps (image 0 first: the
            # previews show it); the last step finishes whatever is left.
            want = count if step == total else min(count, step)
            while len(images) < want:
                images.append(render(request, len(images)))
            if develop is None:
                develop = _Develop(images[0], self._settings.preview_max_side, request.seed)
            if delay > 0:
                # A step lasts at least ``delay``, callback included, like a paced GPU.
                remaining = delay - (time.monotonic() - mark)
                if remaining > 0:
                    time.sleep(remaining)
            mark = time.monotonic()
            on_step(step, total, _preview(develop, step, total))
        return images

    def close(self) -> None:
        return None


def _preview(develop: _Develop, step: int, total: int) -> PreviewFn:
    return lambda: develop.state(step, total)
