"""What pyproject.toml cannot say: the repository's top-level `migrations/`
folder ships inside the package as `gateway.migrations`, so an installed
wheel can create and upgrade its own schema (`gateway/migrate.py` finds it)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["gateway", "gateway.*"], exclude=["*.__pycache__"]),
        "gateway.migrations",
        "gateway.migrations.versions",
    ],
    package_dir={"gateway.migrations": "migrations"},
)
