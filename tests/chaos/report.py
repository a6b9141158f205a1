"""Print the chaos table from a JSONL report and (``--write FILE``) put it in a Markdown
file between ``<!-- chaos:begin -->`` and ``<!-- chaos:end -->``."""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


def _order(row: dict[str, object]) -> tuple[str, int, str]:
    """R1 < R7 < R7c < R12 < S1: letter, number, then any suffix."""
    m = re.match(r"([A-Z]+)(\d*)(.*)", str(row["id"]))
    assert m is not None
    return m.group(1), int(m.group(2) or 0), m.group(3)


def table(rows: list[dict[str, object]]) -> str:
    head = "| id | scenario | trials | passed | lost | dup | stuck | figures |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    body = ""
    for r in sorted(rows, key=_order):
        figs = r.get("figures") or {}
        assert isinstance(figs, dict)
        notes = r.get("notes") or []
        assert isinstance(notes, list)
        text = ", ".join(f"{k}={v}" for k, v in figs.items())
        if notes:
            text += ("; " if text else "") + "; ".join(str(n) for n in notes)
        body += (
            f"| {r['id']} | {r['title']} | {r['trials']} | {r['passed']} | {r['lost']} "
            f"| {r['duplicated']} | {r['stuck']} | {text.replace('|', '/')} |\n"
        )
    return head + body


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("report")
    p.add_argument("--write", default=None)
    a = p.parse_args()
    rows = [json.loads(line) for line in Path(a.report).read_text().splitlines() if line]
    out = table(rows)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    stamp = (
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at {commit or '?'} on "
        f"{platform.machine()} ({platform.python_version()}), `scripts/chaos`.\n\n"
    )
    print(stamp + out)
    if a.write:
        path = Path(a.write)
        text = path.read_text() if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
        if BEGIN not in text:
            text += f"\n{BEGIN}\n{END}\n"
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1] if END in rest else ""
        path.write_text(f"{before}{BEGIN}\n{stamp}{out}{END}{after}")


if __name__ == "__main__":
    main()
