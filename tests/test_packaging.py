"""The built wheel is what users install: it must carry its migrations and create its schema.

The repository keeps its top-level `migrations/` folder; the build maps it into
the package (setup.py). These tests build the wheel, unpack it, and run the
gateway from the unpacked files alone (the dependencies come from this
virtualenv), against fresh SQLite and PostgreSQL databases. CI (`.ci/run`)
also installs the wheel into a fresh virtualenv and migrates with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway.errors import MigrationsNotFound
from gateway.migrate import head_revision
from tests.conftest import query

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this tree, unpacked as site-packages would hold it."""
    # From a copy of the sources: a `build/` folder left in a checkout would leak stale files into the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("gateway", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = out.glob("canary_gateway-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def run_from(site: Path, *args: str, cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` importing the gateway from `site` only (not this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(site), "GATEWAY_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_wheel_carries_the_migrations(unpacked_wheel: Path) -> None:
    shipped = unpacked_wheel / "gateway" / "migrations"
    assert (shipped / "env.py").is_file() and (shipped / "script.py.mako").is_file()
    versions = sorted(path.name for path in (shipped / "versions").glob("*.py"))
    assert versions == sorted(path.name for path in (ROOT / "migrations" / "versions").glob("*.py"))
    assert not (unpacked_wheel / "migrations").exists()  # no top-level package named "migrations"


def test_the_installed_wheel_migrates_a_unmigrated_database_url(
    unpacked_wheel: Path, unmigrated_database_url: str, tmp_path: Path
) -> None:
    located = subprocess.run([sys.executable, "-c", "import gateway.migrate as m; print(m.migrations_dir())"],
                             env={**os.environ, "PYTHONPATH": str(unpacked_wheel)}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=True)
    assert located.stdout.strip() == str(unpacked_wheel / "gateway" / "migrations")

    result = run_from(unpacked_wheel, "migrate", cwd=tmp_path, database_url=unmigrated_database_url)
    assert result.returncode == 0, result.stderr
    assert "database schema is up to date" in result.stdout
    [row] = query(unmigrated_database_url, "SELECT version_num FROM alembic_version")
    assert row["version_num"] == head_revision()
    assert query(unmigrated_database_url, "SELECT count(*) AS n FROM request_records") == [{"n": 0}]


def test_no_migrations_stops_migrate_and_serve_with_one_line(unpacked_wheel: Path, tmp_path: Path) -> None:
    broken = tmp_path / "site"
    shutil.copytree(unpacked_wheel, broken)
    shutil.rmtree(broken / "gateway" / "migrations")
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    for command in (["migrate"], ["serve", "--port", "1"]):
        result = run_from(broken, *command, cwd=tmp_path, database_url=url)
        assert result.returncode == 2
        assert result.stderr.startswith("canary-gateway: no database migrations were found"), result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "gateway.db").exists() or query(
        url, "SELECT count(*) AS n FROM sqlite_master WHERE name = 'request_records'") == [{"n": 0}]


def test_several_heads_or_none_are_refused(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    assert_refused(tmp_path, "no revision")
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    assert_refused(tmp_path, "heads b, c")
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "b"\n')
    assert head_revision(tmp_path) == "c"


def assert_refused(directory: Path, wording: str) -> None:
    with pytest.raises(MigrationsNotFound, match=wording):
        head_revision(directory)
