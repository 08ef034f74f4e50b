"""A writer killed with SIGKILL mid-recording loses at most what it had not handed over: the run
is there, marked incomplete, with every sample written before the kill."""

from __future__ import annotations

import signal
import subprocess
import sys

from mpmcore.experiments.store import RunStore
from mpmcore.procs import terminate

WRITER = """
import sys, time
from mpmcore.experiments.store import RunStore
from mpmcore.experiments.model import SecondSample, FrameRecord
s = RunStore(sys.argv[1])
r = s.begin_run('recording', 'live', 'live', '', ['core'])
t = s.begin_target(r, 'core', 1)
for i in range(600):  # bounded: 60 s at most
    s.add_samples(t, [SecondSample(t=i / 10, stage='live', rps=1.0, errors=0)])
    s.add_frames(t, [FrameRecord(t=i / 10, grid=bytes(4096))])
    print(i, flush=True)
    time.sleep(0.1)
"""


def test_sigkill_mid_recording(tmp_path):
    p = tmp_path / "runs.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(p)], stdout=subprocess.PIPE, text=True)
    written = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # each line: that sample is committed
            written = int(line)
            if written >= 12:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        terminate(proc, 10, signal.SIGKILL)
    assert written >= 12
    with RunStore(p) as store:
        (meta,) = store.list_runs()
        assert meta.status == "incomplete"
        (tr,) = store.load(meta.id).targets
        assert tr.status == "incomplete"
        n = len(store.samples(tr.id))
        assert written + 1 <= n <= written + 2  # all it reported, and at most the one in flight
        assert len(store.frame_times(tr.id)) >= written + 1


OPENER = """
import sys, time
from mpmcore.experiments.store import RunStore
while time.time() < float(sys.argv[2]):  # start together
    time.sleep(0.001)
s = RunStore(sys.argv[1])
print(s.begin_run('experiment', 'x', 'x', '', []))
"""


def test_two_processes_creating_one_new_store_at_once(tmp_path):
    """Both open the same new path at the same instant: both succeed, one creates the schema."""
    import time

    for i in range(8):  # the race was hit in 13 of 20 tries before the schema was made under a lock
        p = tmp_path / f"runs-{i}.sqlite3"
        at = str(time.time() + 0.3)
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(p), at], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            outs = [proc.communicate(timeout=60) for proc in procs]
        finally:
            for proc in procs:
                terminate(proc, 10)
        assert all(proc.returncode == 0 for proc in procs), outs
        assert sorted(int(o) for o, _ in outs) == [1, 2]
        with RunStore(p) as store:
            assert len(store.list_runs()) == 2
