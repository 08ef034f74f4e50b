"""``python -m mpmlab.services.corelaunch --parent-pid N -- serve ...``: the embedded master, tied to the dashboard.

The dashboard starts the master as a separate program (never a fork of uvicorn's process) through
``mpmcore.launch``: Linux sends it SIGTERM when the dashboard dies, however it dies
(PR_SET_PDEATHSIG), and it runs ``mpmlab serve`` in-process. SIGTERM is the master's normal stop:
it stops its children and removes its shared-memory scoreboard, so a killed dashboard leaves no
orphan server and no /dev/shm/mpmlab_* behind.
"""

from __future__ import annotations

import sys

from mpmcore.launch import main as _launch


def main(argv: list[str]) -> int:
    return _launch(argv, prog="mpmlab.services.corelaunch")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
