"""Prometheus' apache_exporter (Debian's prometheus-apache-exporter) on a free loopback port, pointed
at a status page, and one scrape of its /metrics. Shared by every test that has the exporter read
ours (or Apache's) ?auto."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest
from conftest import free_port, need, wait_for

from mpmcore.procs import terminate


def scrape(port: int) -> dict[str, float] | None:
    """The exporter's ``apache_*`` samples (``name{labels}`` -> value), or None while it does not
    answer with ``apache_up`` (0 or 1)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("apache_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out if "apache_up" in out else None


@pytest.fixture
def exporter(tmp_path):
    """``start(scrape_uri) -> port``, once the exporter answers /metrics there (its first scrape of
    ``scrape_uri`` done); every exporter started is stopped by its pid."""
    started: list[subprocess.Popen] = []

    def start(scrape_uri: str) -> int:
        path = need("prometheus-apache-exporter")
        port = free_port()
        log = tmp_path / f"exporter-{port}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen([path, f"--scrape_uri={scrape_uri}", f"--telemetry.address=127.0.0.1:{port}"],
                                 stdout=f, stderr=subprocess.STDOUT)
        started.append(p)

        def up() -> bool:
            if p.poll() is not None:
                raise AssertionError(f"apache_exporter exited with {p.returncode}: {log.read_text()[-2000:]}")
            return scrape(port) is not None

        wait_for(up, timeout=15, interval=0.05, what=f"apache_exporter on 127.0.0.1:{port}")
        return port

    yield start
    for p in started:
        terminate(p, 5)
