"""Cheap previews: a linear latent -> RGB projection instead of a VAE decode.

The child projects the first image's latents (``C x h x w``, in the denoiser's own scaled
space, which is what ``callback_on_step_end`` receives) to ``h x w`` RGB bytes at latent
resolution; the parent scales that to the job's aspect ratio, long side at most
``preview_max_side``, only when the worker asks for it.

The per-channel factors are the widely used calibration published with ComfyUI
(``comfy/latent_formats.py``): ``rgb = latents . factors + bias``, shown as ``(rgb + 1) / 2``.
SD 1.x/2.x and SDXL both have 4 latent channels, so the format is chosen by channel count
and then by the VAE's scaling factor (0.13025 is the SDXL VAE; SD 1.x/2.x use 0.18215).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from safelight.providers.diffusers.protocol import PreviewFrame


@dataclass(frozen=True, slots=True)
class LatentFormat:
    name: str
    channels: int
    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)


SD15 = LatentFormat(
    name="sd15",
    channels=4,
    factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)

SDXL = LatentFormat(
    name="sdxl",
    channels=4,
    factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
)

SDXL_VAE_SCALING_FACTOR = 0.13025


def choose_format(
    channels: int, vae_scaling_factor: float | None, pipeline_name: str = ""
) -> LatentFormat | None:
    """The projection for a pipeline's latents, or None (no previews) when unknown."""
    if channels != 4:
        return None
    if "XL" in pipeline_name or (
        vae_scaling_factor is not None and abs(vae_scaling_factor - SDXL_VAE_SCALING_FACTOR) < 1e-4
    ):
        return SDXL
    return SD15


class LatentProjector:
    """Child side: holds the projection as tensors on the pipeline's device."""

    def __init__(self, fmt: LatentFormat, device: Any) -> None:
        import torch

        self.format = fmt
        self._factors = torch.tensor(fmt.factors, dtype=torch.float32, device=device)
        self._bias = torch.tensor(fmt.bias, dtype=torch.float32, device=device)

    def project(self, latents: Any) -> PreviewFrame:
        """``latents``: ``B x C x h x w`` (the first image is shown)."""
        import torch

        with torch.no_grad():
            first = latents[0].to(torch.float32)  # C x h x w
            rgb = torch.einsum("chw,cr->hwr", first, self._factors) + self._bias
            rgb = ((rgb + 1.0) * 127.5).clamp_(0.0, 255.0).to(torch.uint8)
            h, w = int(rgb.shape[0]), int(rgb.shape[1])
            data = rgb.contiguous().cpu().numpy().tobytes()
        return PreviewFrame(width=w, height=h, rgb=data)


def preview_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The job's aspect ratio with the long side at most ``max_side`` (never upscaled past
    the job's own size)."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def frame_to_image(frame: PreviewFrame, size: tuple[int, int]) -> Image.Image:
    """Parent side: the latent-resolution frame scaled to ``size``."""
    img = Image.frombytes("RGB", (frame.width, frame.height), frame.rgb)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img
