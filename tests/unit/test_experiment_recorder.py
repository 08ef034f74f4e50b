"""The recorder's pieces that need no server: the process-tree usage and the error-log tail."""

from __future__ import annotations

import os

from mpmcore.experiments.recorder import MAX_LOG_LINE, _LogTail, tree_usage


def test_tree_usage_of_this_process():
    u = tree_usage([os.getpid()])
    assert u.processes >= 1
    assert u.pss_bytes and u.rss_bytes and 0 < u.pss_bytes <= u.rss_bytes
    assert u.cpu_seconds is not None and u.cpu_seconds > 0
    gone = tree_usage([2**22 + 12345])  # no such pid (above the kernel's pid_max default)
    assert (gone.pss_bytes, gone.cpu_seconds, gone.processes) == (None, None, 0)


def test_log_tail_reads_only_new_whole_lines(tmp_path):
    log = tmp_path / "error_log"
    log.write_text("old line from before the run\n")
    tail = _LogTail(log)
    assert tail.read() == []
    with open(log, "a") as f:
        f.write("first\nsecond\npart")
    assert tail.read() == ["first", "second"]
    with open(log, "a") as f:
        f.write("ial\n\n" + "x" * (MAX_LOG_LINE + 10) + "\n")
    assert tail.read() == ["partial", "x" * MAX_LOG_LINE]
    log.write_text("rotated\n")  # shorter than what was read: read again from its start
    assert tail.read() == ["rotated"]
    assert _LogTail(None).read() == []
    missing = _LogTail(tmp_path / "none")
    assert missing.read() == []
