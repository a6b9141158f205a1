"""RGB colours as float triples in 0..1, and the few colour operations the painter needs
(hex codes, HSV, mixing, hue turns)."""

from __future__ import annotations

import colorsys

import numpy as np

from safelight.providers.builtin.fields import F32

Rgb = tuple[float, float, float]


def from_hex(code: str) -> Rgb:
    v = int(code.lstrip("#"), 16)
    return ((v >> 16) / 255.0, ((v >> 8) & 0xFF) / 255.0, (v & 0xFF) / 255.0)


def hsv(hue: float, sat: float, val: float) -> Rgb:
    return colorsys.hsv_to_rgb(
        (hue / 360.0) % 1.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0)
    )


def to_hsv(c: Rgb) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*c)
    return h * 360.0, s, v


def mix(a: Rgb, b: Rgb, t: float) -> Rgb:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def rotate(c: Rgb, degrees: float) -> Rgb:
    h, s, v = to_hsv(c)
    return hsv(h + degrees, s, v)


def vivid(c: Rgb, sat: float = 0.85, val: float = 1.0) -> Rgb:
    h, s, _ = to_hsv(c)
    return hsv(h, max(s, sat) if s > 0.05 else 0.0, val)


def scaled(c: Rgb, k: float) -> Rgb:
    return (c[0] * k, c[1] * k, c[2] * k)


def vec(c: Rgb) -> F32:
    return np.array(c, dtype=np.float32)
