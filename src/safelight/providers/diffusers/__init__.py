"""Stable Diffusion family text-to-image through Hugging Face diffusers.

Needs the ``diffusers`` extra (torch first: see docs/diffusers.md).  Importing this package
does not import torch; only the model process does.
"""

from safelight.providers.diffusers.provider import DiffusersProvider
from safelight.providers.diffusers.styles import STYLES

__all__ = ["STYLES", "DiffusersProvider"]
