"""The three MPMs. Each module's ``run_child(env)`` is what a forked child does; they differ only in
scheduling (who waits on which socket, who owns a connection between requests)."""

from collections.abc import Callable

from mpmcore.mpm import event, prefork, worker
from mpmcore.mpm.common import ChildEnv

#: MPM name -> what a child of that MPM runs after fork() (its exit status)
RUN_CHILD: dict[str, Callable[[ChildEnv], int]] = {
    "prefork": prefork.run_child, "worker": worker.run_child, "event": event.run_child}
