"""Settings follow one rule: class defaults < a command's own defaults < SAFELIGHT_* < flags
(issue 13: the worker's host-name default used to beat SAFELIGHT_NODE_NAME)."""

from __future__ import annotations

from safelight.config import Settings


def test_command_default_loses_to_the_environment_and_the_environment_to_flags() -> None:
    host = {"node_name": "host-a"}
    assert Settings.load({}, environ={}, defaults=host).node_name == "host-a"
    env = {"SAFELIGHT_NODE_NAME": "from-env"}
    assert Settings.load({}, environ=env, defaults=host).node_name == "from-env"
    flags = {"node_name": "from-flag"}
    assert Settings.load(flags, environ=env, defaults=host).node_name == "from-flag"
    assert Settings.load({"node_name": None}, environ=env, defaults=host).node_name == "from-env"
