"""The control socket (mpmcore/master/control.py) and the master's command table, without a
master process: requests go through the real socket code and the real Master.control."""

from __future__ import annotations

import select
import threading
from pathlib import Path

import pytest

from mpmcore.master import ControlServer, Master, ctl_request, parse_listen, run_dir_for
from mpmcore.master.control import answer


def test_answer_refuses_what_is_not_a_request_object():
    def handler(req):
        raise AssertionError("not called")
    assert answer(b"[1, 2]\n", handler) == {"ok": False, "error": "a control request is a JSON object with a 'cmd'"}
    assert answer(b"", handler)["ok"] is False
    assert answer(b"{not json\n", handler)["ok"] is False


def test_master_command_table_errors():
    m = Master(listen="127.0.0.1:1", mpm="prefork")
    unknown = answer(b'{"cmd": "reboot"}\n', m.control)
    assert unknown == {"ok": False, "error": "unknown command 'reboot' (status, graceful, restart, switch, check, "
                                             "graceful-stop, stop)"}
    assert answer(b'{"cmd": "graceful", "set": [1]}\n', m.control) == {
        "ok": False, "error": "'set' must be an object of Directive: value"}
    bad_mpm = answer(b'{"cmd": "switch", "mpm": "threadpool"}\n', m.control)
    assert bad_mpm["ok"] is False and bad_mpm["directive"] == "MPM"
    m.stopping_gracefully = True
    assert answer(b'{"cmd": "restart"}\n', m.control) == {"ok": False, "error": "the server is stopping"}


def test_stop_command_ends_the_loop():
    m = Master(listen="127.0.0.1:1", mpm="event")
    m.running = True
    assert answer(b'{"cmd": "stop"}\n', m.control) == {"ok": True}
    assert m.running is False


def test_round_trip_over_a_real_unix_socket(tmp_path: Path):
    server = ControlServer(tmp_path / "ctl.sock")
    server.open()
    seen: list[dict] = []

    def handle(req):
        seen.append(req)
        return {"ok": True, "echo": req["cmd"]}

    def serve_one():
        select.select([server.fileno()], [], [], 5)
        server.serve(handle)

    t = threading.Thread(target=serve_one)
    t.start()
    try:
        got = ctl_request(str(server.path), {"cmd": "status"}, timeout=5)
    finally:
        t.join(5)
        server.close()
    assert got == {"ok": True, "echo": "status"} and seen == [{"cmd": "status"}]
    assert not server.path.exists()  # closing removes the socket file


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), (":9000", ("127.0.0.1", 9000)), ("[::1]:80", ("::1", 80))])
def test_parse_listen(text, parsed):
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("text", ["localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_listen_refuses(text):
    with pytest.raises(ValueError):
        parse_listen(text)


def test_run_dir_is_one_safe_name_per_listen_address():
    assert run_dir_for("127.0.0.1:8080").name == "127_0_0_1_8080"
    assert run_dir_for("[::1]:80").name == "___1__80"
    assert run_dir_for("[::1]:80").parent == run_dir_for("127.0.0.1:8080").parent
