"""A release a team can pin: one version, printed by the CLI, carried by the package and the changelog."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parent.parent


def test_the_cli_prints_the_version() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"canary-gateway {gateway.__version__}"


def test_the_installed_package_carries_the_version_from_one_place() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", gateway.__version__)
    assert importlib.metadata.version("canary-gateway") == gateway.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r'^version\s*=\s*"', pyproject, re.MULTILINE)


def test_the_changelog_has_a_section_for_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{gateway.__version__}]" in changelog
