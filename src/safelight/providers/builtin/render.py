"""One finished picture: prompt -> plan -> scene -> style, at full size.

Deterministic: every random draw comes from a generator seeded with ``seed + index``, in a
fixed order, so equal requests give byte-identical images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from safelight.providers.base import GenerationRequest
from safelight.providers.builtin.canvas import Canvas
from safelight.providers.builtin.prompt import read_prompt
from safelight.providers.builtin.scene import build_scene
from safelight.providers.builtin.styles import STYLES


def render(request: GenerationRequest, index: int) -> Image.Image:
    """Paint image ``index`` of ``request`` at full size (deterministic)."""
    rng = np.random.default_rng(request.seed + index)
    plan = read_prompt(request.prompt, request.negative_prompt)
    scene = build_scene(plan, request.width, request.height, rng)
    img = STYLES[request.style](Canvas(scene, rng))
    # Half a level of dither: smooth gradients (neon, aurora skies) without banding.
    img += (rng.random((request.height, request.width, 1), dtype=np.float32) - 0.5) / 255.0
    np.clip(img, 0.0, 1.0, out=img)
    return Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), "RGB")
