"""The three MPMs. Each module's ``run_child(env)`` is what a forked child does; they differ only in
scheduling (who waits on which socket, who owns a connection between requests)."""

from mpmcore.mpm import event, prefork, worker

MPM_MODULES = {"prefork": prefork, "worker": worker, "event": event}
