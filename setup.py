"""The build step pyproject.toml cannot say: templates/ and static/ stay top-level folders of the
repository, and a built wheel carries them inside the dashboard's package (``<package>/templates``,
``<package>/static``, static/vendor included), where ``mpmlab.settings`` finds them when installed.
An editable install (``./dev.sh setup``) copies nothing: the package finds them in the repository.

The dashboard's package name is one constant, ``[tool.mpmlab-build] dashboard-package`` in
pyproject.toml (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGE: str = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["mpmlab-build"]["dashboard-package"]
ASSETS = ("templates", "static")


class BuildPyWithAssets(build_py):
    """build_py, then the repository's templates/ and static/ copied into the dashboard's package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        vendor = HERE / "static" / "vendor"
        if not vendor.is_dir() or not any(vendor.iterdir()):
            raise SystemExit("static/vendor is empty: run ./dev.sh setup (npm ci, python -m mpmlab.vendor) "
                             "before building a wheel, or the dashboard would have no htmx, uPlot or Swagger UI")
        for name in ASSETS:
            shutil.copytree(HERE / name, Path(self.build_lib) / PACKAGE / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithAssets})
