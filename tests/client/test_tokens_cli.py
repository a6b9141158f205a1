"""Token store and command-line parsing (no server needed)."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from safelight.client.cli import ExitCode, parse_job_ref, register
from safelight.client.tokens import TokenStore, config_dir


def test_token_store_round_trip_is_private(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "cfg" / "tokens.json")
    assert store.get("http://a:1", "j") is None
    store.put("http://a:1/", "j", "t1")
    store.put("http://b:2", "j", "t2")
    assert store.get("http://a:1", "j") == "t1"
    assert store.get("http://b:2/", "j") == "t2"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.forget("http://a:1", "j")
    assert store.get("http://a:1", "j") is None


def test_config_dir_override() -> None:
    assert config_dir({"SAFELIGHT_CONFIG_DIR": "/x/y"}) == Path("/x/y")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("abc", ("http://s:1", "abc")),
        ("http://h:8000/jobs/abc", ("http://h:8000", "abc")),
        ("http://h:8000/jobs/abc?transport=sse", ("http://h:8000", "abc")),
        ("https://h/api/jobs/abc", ("https://h", "abc")),
        ("https://h/api/jobs/abc/events?after=3", ("https://h", "abc")),
        ("https://h/prefix/jobs/abc", ("https://h/prefix", "abc")),
        ("https://h/prefix/api/jobs/abc/ws", ("https://h/prefix", "abc")),
    ],
)
def test_parse_job_ref(ref: str, expected: tuple[str, str]) -> None:
    assert parse_job_ref(ref, "http://s:1") == expected


def test_parse_job_ref_rejects_other_urls() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_job_ref("http://h/nothing/here", None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="safelight")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_generate_arguments() -> None:
    args = parser().parse_args(
        ["generate", "a fox", "--size", "768x512", "-n", "2", "--steps", "30", "--json"]
    )
    assert args.size == (768, 512)
    assert args.num_images == 2
    assert args.json
    assert callable(args.func)


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["generate", "x", "--size", "big"])
    assert info.value.code == ExitCode.USAGE == 2


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["watch", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "130" in out
