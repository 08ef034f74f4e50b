"""A plain install works: the wheel is built (``pip wheel --no-deps``) from the repository's files
(what git tracks, plus static/vendor as ./dev.sh setup makes it), installed into a fresh virtual
environment outside the repository, and its ``mpmlab`` command starts the dashboard, which serves
its page, a fragment, its static files and the vendored libraries from the installed package.

Offline: the dependencies are not downloaded. The fresh environment sees the ones the project's
own environment already holds (installed from requirements.lock) through a directory of links to
exactly those distributions' files (every distribution but mpmlab itself, so nothing of the
repository leaks in), named in a ``.pth`` file; mpmlab comes from the wheel only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from conftest import ROOT, answers_200, free_port, http_get, wait_for
from dashboard_fixtures import START_LINE, assert_core_gone

from mpmcore.procs import terminate

#: The dashboard's package, as the build names it (pyproject.toml [tool.mpmlab-build]).
PACKAGE = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mpmlab-build"]["dashboard-package"]
#: The name the wheel must install the dashboard under (docs/ARCHITECTURE.md, "Packaging").
WANTED = "mpmlab"


def _tracked_tree(dest: Path) -> Path:
    """The repository as a fresh clone has it (git's files) plus static/vendor (./dev.sh setup)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    vendor = ROOT / "static" / "vendor"
    assert vendor.is_dir() and any(vendor.iterdir()), "static/vendor is missing: run ./dev.sh setup first"
    for f in vendor.rglob("*"):
        if f.is_file():
            (dest / f.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            (dest / f.relative_to(ROOT)).write_bytes(f.read_bytes())
    return dest


def _dependency_links(dest: Path) -> Path:
    """Links to the files of every distribution installed here except mpmlab (the lock's packages)."""
    dest.mkdir()
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower() == "mpmlab" or not dist.files:
            continue
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files}:
            src = base / top
            if top in ("..", "__pycache__") or top.endswith(".pth") or not src.exists() or (dest / top).exists():
                continue
            if top.startswith("__editable__"):
                continue
            (dest / top).symlink_to(src)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _tracked_tree(tmp / "src")
    # the project's environment provides setuptools (from the lock): no build isolation, no index
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("mpmlab-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = _dependency_links(tmp / "deps")
    (site / "zz-mpmlab-test-deps.pth").write_text(str(deps) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return env_dir


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MPMLAB_", "PYTHON", "VIRTUAL_ENV"))}


def test_the_wheel_carries_templates_and_static(installed):
    py = installed / "bin" / "python"
    out = subprocess.run([str(py), "-c", f"import {PACKAGE}, mpmcore, {PACKAGE}.settings as s; "
                                         f"print({PACKAGE}.__file__); print(mpmcore.__file__); "
                                         "print(s.TEMPLATES_DIR); print(s.STATIC_DIR)"],
                         capture_output=True, text=True, timeout=60, cwd=str(installed), env=_env())
    assert out.returncode == 0, out.stderr
    pkg, core, templates, static = (Path(line) for line in out.stdout.split())
    for p in (pkg, core, templates, static):
        assert installed in p.parents, f"{p} is not from the fresh environment"  # nothing from the repository
    assert (templates / "index.html").is_file() and (static / "js" / "charts.js").is_file()
    assert any((static / "vendor").glob("htmx*.js")), "the vendored front-end libraries are not in the wheel"


def test_the_installed_mpmlab_serves_its_page_and_a_fragment(installed, tmp_path):
    port, core_port = free_port(), free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(installed / "bin" / "mpmlab"), "--port", str(port), "--core-listen",
                                 f"127.0.0.1:{core_port}", "--no-token"], stdout=f, stderr=subprocess.STDOUT,
                                cwd=str(tmp_path), env=_env())
    pids = [proc.pid]
    try:
        def up():
            assert proc.poll() is None, log.read_text()[-3000:]
            return START_LINE.search(log.read_text(errors="replace"))

        wait_for(up, timeout=60, interval=0.2, what="the installed dashboard's start line")
        # the line comes just before uvicorn listens
        wait_for(lambda: answers_200(port, "/api/status"), timeout=20, interval=0.1, what="the dashboard answering")
        status, _, body = http_get(port, "/")
        assert status == 200 and b'id="tab-traffic"' in body
        status, _, body = http_get(port, "/ui/traffic/form?pattern=slowloris")
        assert status == 200 and b'id="traffic-form"' in body and b"slowloris" in body
        for path in ("/static/js/charts.js", "/static/vendor/htmx.min.js"):
            status, _, body = http_get(port, path)
            assert status == 200 and len(body) > 1000, path
        status, _, body = http_get(port, "/api/status")
        assert status == 200
        pids.append(json.loads(body)["core"]["pid"])
    finally:
        terminate(proc, 30, signal.SIGTERM)
    assert_core_gone(f"127.0.0.1:{core_port}", [p for p in pids if p])


def test_no_generic_top_level_app_package_is_installed(installed):
    site = next((installed / "lib").glob("python3*/site-packages"))
    tops = {p.name for p in site.iterdir()}
    assert WANTED in tops and "app" not in tops, sorted(tops)
