"""The real-Apache launcher the tests and bench/bench_traffic.py use: mpmcore.realservers (moved
into the product, where the experiments' targets use it too), under the name the tests know."""

from __future__ import annotations

from mpmcore.realservers import APACHE, MPMS, apache_dir, pidfile, read_pid, signal_stop, start

__all__ = ["APACHE", "MPMS", "apache_dir", "pidfile", "read_pid", "signal_stop", "start"]
