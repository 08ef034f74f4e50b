"""``python -m mpmcore.launch --parent-pid N -- serve ...``: ``mpmlab serve`` tied to its parent.

The dashboard (``mpmlab.services.corelaunch``) and the experiments' core target
(``mpmcore.experiments.targets``) start the embedded master as a separate program through this
launcher. It asks Linux to send it SIGTERM when the parent dies, however it dies
(PR_SET_PDEATHSIG), and then runs ``mpmlab serve`` in-process. SIGTERM is the master's normal stop:
it stops its children and removes its shared-memory scoreboard, so a killed parent leaves no
orphan server and no /dev/shm/mpmlab_* behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from mpmcore.cli import main as mpmlab_main

__all__ = ["PR_SET_PDEATHSIG", "main"]

#: Linux's PR_SET_PDEATHSIG (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def main(argv: list[str], prog: str = "mpmcore.launch") -> int:
    """``--parent-pid PID -- ARGS...``: die with PID, then ``mpmlab ARGS...``; its exit status."""
    if len(argv) < 3 or argv[0] != "--parent-pid" or "--" not in argv:
        print(f"usage: python -m {prog} --parent-pid PID -- serve ...", file=sys.stderr)
        return 2
    parent = int(argv[1])
    rest = argv[argv.index("--") + 1:]
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 1
    return mpmlab_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
