"""The master process: the loop (arbiter), the spare-server policy, its children, the control socket."""

from mpmcore.master.arbiter import Master
from mpmcore.master.control import (
    ControlServer,
    control_path,
    ctl_request,
    find_servers,
    parse_listen,
    run_dir_for,
    runtime_root,
)

__all__ = ["ControlServer", "Master", "control_path", "ctl_request", "find_servers", "parse_listen",
           "run_dir_for", "runtime_root"]
