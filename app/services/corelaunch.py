"""``python -m app.services.corelaunch --parent-pid N -- serve ...``: the embedded master, tied to the dashboard.

The dashboard starts the master as a separate program (never a fork of uvicorn's process). This
small launcher asks Linux to send it SIGTERM when the dashboard dies, however it dies
(PR_SET_PDEATHSIG), and then runs ``mpmlab serve`` in-process. SIGTERM is the master's normal stop:
it stops its children and removes its shared-memory scoreboard, so a killed dashboard leaves no
orphan server and no /dev/shm/mpmlab_* behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from mpmcore.cli import main as mpmlab_main

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "--parent-pid" or "--" not in argv:
        print("usage: python -m app.services.corelaunch --parent-pid PID -- serve ...", file=sys.stderr)
        return 2
    parent = int(argv[1])
    rest = argv[argv.index("--") + 1:]
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the dashboard died before prctl took effect
        return 1
    return mpmlab_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
