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

Modules, each importing only those above it::

    fields       float32 arrays: resize, blur, smoothstep, blend, 1-D fractal noise
    colours      RGB triples: hex, HSV, mix, hue turns
    prompt       prompt -> Plan (palette, motifs, night, tag)
    scene        Plan + size + generator -> Scene (ridges, discs, stars)
    canvas       Canvas: coordinates, value noise, coverage masks for one image
    styles/      one painter per style (flat is the mosaic's base), and the registry
    render       one full-size image: plan -> scene -> style -> dither -> PIL image
    develop      the noise -> picture schedule for previews
    provider     BuiltinProvider: the step loop, pacing and previews
"""

from safelight.providers.builtin.prompt import Palette, Plan, read_prompt
from safelight.providers.builtin.provider import MIN_SECONDS_PER_STEP, BuiltinProvider
from safelight.providers.builtin.render import render
from safelight.providers.builtin.scene import Scene, build_scene
from safelight.providers.builtin.styles import DEFAULT_STYLE, STYLE_DESCRIPTIONS, STYLES

__all__ = [
    "DEFAULT_STYLE",
    "MIN_SECONDS_PER_STEP",
    "STYLES",
    "STYLE_DESCRIPTIONS",
    "BuiltinProvider",
    "Palette",
    "Plan",
    "Scene",
    "build_scene",
    "read_prompt",
    "render",
]
