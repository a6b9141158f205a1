"""S12 supply chain, offline: bandit over src/ (its ignores are justified in
security/README.md) and the installed packages against security/advisories.json.

    python -m tests.chaos.supply_chain          # what scripts/audit runs

pip-audit needs its vulnerability service (PyPI's JSON API or OSV); where that cannot be
reached it reports every package as "could not be audited" and still says "No known
vulnerabilities found", which proves nothing.  So the offline check here is the evidence
this repository can produce, and docs/reliability.md ("Security audit") says what it covers.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def run_bandit(root: Path = ROOT) -> list[dict[str, Any]]:
    """Bandit's findings (every severity) with the project's configuration."""
    proc = subprocess.run(
        [sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-r", "src", "-f", "json", "-q"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=280,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"bandit did not run (install the [dev] extra): {proc.stderr[-500:]}")
    results: list[dict[str, Any]] = json.loads(proc.stdout)["results"]
    return results


def audit_installed(advisories: Path) -> tuple[list[str], int]:
    """(advisories whose vulnerable version is installed, advisories checked)."""
    entries = json.loads(advisories.read_text())["advisories"]
    hits = []
    checked = 0
    for entry in entries:
        try:
            installed = importlib.metadata.version(entry["package"])
        except importlib.metadata.PackageNotFoundError:
            continue
        checked += 1
        if Version(installed) < Version(entry["fixed"]):
            hits.append(
                f"{entry['package']} {installed}: {entry['id']} (fixed in {entry['fixed']})"
            )
    return hits, checked


def main() -> int:
    findings = run_bandit()
    for f in findings:
        print(f"bandit: {f['filename']}:{f['line_number']} {f['test_id']} {f['issue_text']}")
    hits, checked = audit_installed(ROOT / "security" / "advisories.json")
    for hit in hits:
        print(f"advisory: {hit}")
    print(
        f"bandit findings: {len(findings)}; advisories checked against installed packages: "
        f"{checked}, present: {len(hits)}"
    )
    return 1 if findings or hits else 0


if __name__ == "__main__":
    raise SystemExit(main())
