"""Previews: the finished picture "developed" from noise over the steps.

Only image 0 is shown.  It is scaled once to preview size (long side at most
``preview_max_side``); the noise it develops from is seeded from the job's seed, so equal
requests give equal previews too.  A step's preview is computed only when asked for.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from safelight.providers.builtin.fields import blur, resize


class Develop:
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
            [resize(rng.random((5, 5), dtype=np.float32), *self.size) for _ in range(3)], axis=-1
        )
        grain = rng.standard_normal((self.size[1], self.size[0], 3), dtype=np.float32)
        self.noise = np.clip(0.45 + 0.35 * (blobs - 0.5) + 0.18 * grain, 0.0, 1.0)

    def state(self, step: int, total: int) -> Image.Image:
        if step >= total:
            out = self.target
        else:
            t = step / total
            radius = (1.0 - t) ** 2 * 0.05 * max(self.size)
            structure = np.stack([blur(self.target[..., c], radius) for c in range(3)], axis=-1)
            out = structure + (self.noise - structure) * np.float32((1.0 - t) ** 2)
        return Image.fromarray((np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")
