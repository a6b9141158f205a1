"""Styles the diffusers provider declares: additions to the prompt and negative prompt."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Style:
    description: str
    prompt_suffix: str = ""
    negative_suffix: str = ""


DEFAULT_STYLE = "none"

STYLES: dict[str, Style] = {
    "none": Style("The prompt as written."),
    "photo": Style(
        "Photographic: natural light, sharp focus.",
        "professional photograph, natural light, sharp focus, high detail",
        "painting, drawing, illustration, cartoon",
    ),
    "watercolor": Style(
        "Watercolor painting on paper.",
        "watercolor painting, soft washes of color, visible paper texture",
        "photograph, 3d render",
    ),
    "anime": Style(
        "Anime illustration with cel shading.",
        "anime style illustration, clean line art, vibrant cel shading",
        "photograph, realistic",
    ),
    "cinematic": Style(
        "Film still: dramatic light, shallow depth of field.",
        "cinematic film still, dramatic lighting, shallow depth of field, film grain",
        "cartoon, flat lighting",
    ),
    "line-art": Style(
        "Black ink line art on white.",
        "black and white line art, clean ink lines, minimal shading, white background",
        "color, photograph, shading",
    ),
}


def _join(*parts: str) -> str:
    return ", ".join(p.strip() for p in parts if p.strip())


def apply_style(style: str, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """``(prompt, negative_prompt)`` with the style's additions; KeyError if unknown."""
    s = STYLES[style or DEFAULT_STYLE]
    return _join(prompt, s.prompt_suffix), _join(negative_prompt, s.negative_suffix)
