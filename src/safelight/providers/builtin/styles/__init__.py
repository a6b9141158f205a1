"""The six styles the builtin provider paints, chosen by name.

Each style is a module with one ``paint(canvas) -> F32`` function that returns the full
picture as an ``(h, w, 3)`` float32 array in about 0..1.
"""

from __future__ import annotations

from collections.abc import Callable

from safelight.providers.builtin.canvas import Canvas
from safelight.providers.builtin.fields import F32
from safelight.providers.builtin.styles import aurora, ink, mosaic, neon, topographic, watercolor

STYLE_DESCRIPTIONS: dict[str, str] = {
    "watercolor": "Soft pigment washes on textured paper, with pooled edges and white glints.",
    "neon": "Glowing outlines over a dark synthwave horizon and a perspective grid.",
    "topographic": "A contour map: the scene read as terrain, tinted by height and hillshaded.",
    "aurora": "A night sky of northern-light curtains over dark silhouettes and reflections.",
    "mosaic": "Hand-cut tiles with dark grout, each tile one colour of the scene.",
    "ink": "Sumi-e brush ink on rice paper: misty ridges, dry-brush edges and a red seal.",
}
DEFAULT_STYLE = "watercolor"

Painter = Callable[[Canvas], F32]

STYLES: dict[str, Painter] = {
    "watercolor": watercolor.paint,
    "neon": neon.paint,
    "topographic": topographic.paint,
    "aurora": aurora.paint,
    "mosaic": mosaic.paint,
    "ink": ink.paint,
}
