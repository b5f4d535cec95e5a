"""The generated references in docs/ match the code they are generated from."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize(("what", "file"), [("config", "configuration.md"), ("admin-api", "admin-api.md")])
def test_the_committed_reference_is_what_the_code_generates(
    what: str, file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reference", what]) == 0
    generated = capsys.readouterr().out
    assert (DOCS / file).read_text() == generated, (
        f"docs/{file} is out of date: run `canary-gateway reference {what} > docs/{file}`")


def test_the_configuration_reference_gives_type_default_constraints_and_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["reference", "config"])
    rows: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split(" | ")[0].strip("| `"), line)  # the first section's row
    assert rows["port"] == "| `port` | int | `8080` | ≥ 1, ≤ 65535 |"
    assert "| duration |" in rows["check_interval"]
    assert "| secret string | `\"\"` |" in rows["user_id_salt"]
    assert "one of `openai`, `anthropic`" in rows["kind"]
    assert "beyond it the proxy answers 503 at once" in rows["max_concurrency"]  # the comment in config.py


def test_the_admin_reference_lists_every_admin_route_with_its_answers(capsys: pytest.CaptureFixture[str]) -> None:
    main(["reference", "admin-api"])
    text = capsys.readouterr().out
    assert "| `PUT` | `/admin/deployments/{name}/canary-percent` |" in text
    row = next(line for line in text.splitlines() if "`/admin/deployments/{name}/canary-percent`" in line)
    assert "`percent`" in row and "`reason`?" in row and "409" in row and "401" in row
