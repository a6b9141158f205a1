"""POST /api/jobs validation: each rule of API.md with its field and message."""

from __future__ import annotations

from typing import Any

import pytest

from safelight.api.schemas import validate_create
from safelight.errors import ValidationFailed
from safelight.providers.base import ProviderInfo

INFO = {"builtin": ProviderInfo("builtin", "Builtin", ("watercolor", "neon"), "watercolor")}


def ok(body: dict[str, Any]) -> dict[str, Any]:
    return validate_create(body, INFO, "builtin").settings


def fields(body: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        validate_create(body, INFO, "builtin")
    return {e["field"]: e["message"] for e in info.value.errors}


def test_defaults_and_trimmed_prompt() -> None:
    s = ok({"prompt": "  a fox  "})
    assert s["prompt"] == "a fox"
    assert (s["width"], s["height"], s["steps"], s["num_images"]) == (512, 512, 30, 1)
    assert s["style"] == "watercolor" and s["provider"] == "builtin"
    assert 0 <= s["seed"] <= 4294967295


def test_a_null_seed_is_chosen_by_the_server_and_a_given_one_is_kept() -> None:
    assert ok({"prompt": "x", "seed": 0})["seed"] == 0
    assert ok({"prompt": "x", "seed": 4294967295})["seed"] == 4294967295


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({}, "prompt", "required"),
        ({"prompt": "   "}, "prompt", "blank"),
        ({"prompt": "x" * 2001}, "prompt", "at most 2000"),
        ({"prompt": 5}, "prompt", "string"),
        ({"prompt": "x", "negative_prompt": "n" * 2001}, "negative_prompt", "at most 2000"),
        ({"prompt": "x", "width": 63}, "width", "between 64 and 2048"),
        ({"prompt": "x", "width": 2056}, "width", "between 64 and 2048"),
        ({"prompt": "x", "height": 100}, "height", "multiple of 8"),
        ({"prompt": "x", "width": "512"}, "width", "integer"),
        ({"prompt": "x", "width": True}, "width", "integer"),
        ({"prompt": "x", "steps": 0}, "steps", "between 1 and 150"),
        ({"prompt": "x", "steps": 151}, "steps", "between 1 and 150"),
        ({"prompt": "x", "num_images": 5}, "num_images", "between 1 and 4"),
        ({"prompt": "x", "seed": -1}, "seed", "between 0 and 4294967295"),
        ({"prompt": "x", "seed": 4294967296}, "seed", "between 0 and 4294967295"),
        ({"prompt": "x", "style": "oil"}, "style", "one of: watercolor, neon"),
        ({"prompt": "x", "provider": "nope"}, "provider", "one of: builtin"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_each_rule_names_its_field(body: dict[str, Any], field: str, fragment: str) -> None:
    assert fragment in fields(body)[field]


def test_all_errors_are_reported_at_once() -> None:
    assert set(fields({"prompt": "", "width": 1, "steps": 999})) == {"prompt", "width", "steps"}


def test_prompt_limits_count_characters_not_bytes() -> None:
    assert ok({"prompt": "🦊" * 2000})["prompt"] == "🦊" * 2000


def test_body_must_be_an_object() -> None:
    assert fields([1, 2]) == {"body": "must be a JSON object"}
