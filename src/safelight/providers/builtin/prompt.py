"""Reading the prompt: words -> themes, motifs and colours -> a ``Plan``.

Theme words (``sunset``, ``forest``, ``city``...) choose the sky and ground palettes and some
motifs; motif words (``mountains``, ``moon``, ``orbs``...) add motifs; colour words tint the
palette; the negative prompt removes motifs.  A prompt that names no theme gets a palette
from its words' hashes.

Equal prompts give equal plans: words are hashed with BLAKE2 (not ``hash()``, which is
salted per process).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from safelight.providers.builtin.colours import Rgb, from_hex, hsv, mix, rotate, scaled, to_hsv


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
        sky=(hsv(h2, 0.45, 0.55), hsv(h2 + 20, 0.28, 0.86), hsv(h1, 0.16, 0.98)),
        far=hsv(h1, 0.35, 0.66),
        near=hsv(h1 + 10, 0.55, 0.30),
        accent=hsv(h1 + 180, 0.55, 1.0),
    )


def read_prompt(prompt: str, negative_prompt: str = "") -> Plan:
    """Turn the prompt into a palette and motifs (exposed for tests and docs)."""
    words = _words(prompt)
    tag = _stable_hash(" ".join(prompt.lower().split()))
    themes = list(dict.fromkeys(_THEME_WORDS[w] for w in words if w in _THEME_WORDS))
    if themes:
        sky_t = _THEMES[next((t for t in themes if _THEMES[t].kind != "ground"), themes[0])]
        ground_t = _THEMES[next((t for t in themes if _THEMES[t].kind != "sky"), themes[0])]
        far, near = from_hex(ground_t.far), from_hex(ground_t.near)
        if sky_t.night and not ground_t.night:
            far = mix(scaled(far, 0.45), from_hex(sky_t.far), 0.5)
            near = mix(scaled(near, 0.35), from_hex(sky_t.near), 0.5)
        palette = Palette(
            (from_hex(sky_t.sky[0]), from_hex(sky_t.sky[1]), from_hex(sky_t.sky[2])),
            far,
            near,
            from_hex(sky_t.accent),
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
            rotate(palette.sky[0], turn),
            rotate(palette.sky[1], turn),
            rotate(palette.sky[2], turn),
        ),
        rotate(palette.far, turn),
        rotate(palette.near, turn),
        rotate(palette.accent, turn),
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
        _, s, v = to_hsv(c)
        return mix(c, hsv(hue, max(s, min_sat), v), amount)

    first, last = hues[0], hues[-1] if len(hues) > 1 else hues[0]
    return Palette(
        (p.sky[0], tint(p.sky[1], first, 0.35, 0.3), p.sky[2]),
        tint(p.far, first, 0.85, 0.4),
        tint(p.near, first, 0.85, 0.5),
        hsv(last, max(to_hsv(p.accent)[1], 0.6), 1.0),
    )
