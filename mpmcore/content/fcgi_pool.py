"""One process of the FastCGI pool for /unsafe, forked by the master (UnsafeFastCGIPool N).

Single-threaded: it accepts on the pool's Unix socket, reads one FastCGI request (fcgi.py), runs
the thread-unsafe module (unsafe.py) and answers, moving its scoreboard slot through ``_ R W _``
like any other worker.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import urllib.parse

from mpmcore import scoreboard as sb
from mpmcore.content.fcgi import (
    CALL_TIMEOUT,
    FCGI_END_REQUEST,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_STDIN,
    FCGI_STDOUT,
    decode_params,
    read_record,
    record,
)
from mpmcore.content.unsafe import unsafe_work
from mpmcore.procs import install_child_signals


def run_pool_process(scoreboard: sb.Scoreboard, proc: int, generation: int, listen_sock: socket.socket) -> int:
    """One single-threaded FastCGI responder: accept, read the request, run /unsafe, answer."""
    install_child_signals()  # USR1 ignored: the pool is stopped with TERM
    slot = scoreboard.slot(proc, 0)
    slot.claim(os.getpid(), threading.get_native_id(), generation, sb.STARTING)
    listen_sock.setblocking(True)
    slot.set(sb.READY)
    while True:
        try:
            conn, _ = listen_sock.accept()
        except InterruptedError:
            continue
        with conn:
            conn.settimeout(CALL_TIMEOUT)
            slot.new_connection("fastcgi", sb.BUSY_READ)
            try:
                params: dict[str, str] = {}
                raw_params = bytearray()
                while True:
                    rtype, rid, content = read_record(conn)
                    if rtype == FCGI_PARAMS:
                        if content:
                            raw_params += content
                        else:
                            params = decode_params(bytes(raw_params))
                    elif rtype == FCGI_STDIN and not content:
                        break
                q = urllib.parse.parse_qs(params.get("QUERY_STRING", ""))
                rid_s = (q.get("id") or ["?"])[0]
                ms = int((q.get("ms") or ["0"])[0])
                slot.request_started(f"GET /unsafe?{params.get('QUERY_STRING', '')}", "fastcgi", "FastCGI/1.0", None)
                body = json.dumps(unsafe_work(rid_s, ms)).encode()
                reply = b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
                conn.sendall(record(FCGI_STDOUT, reply, rid) + record(FCGI_STDOUT, b"", rid)
                             + record(FCGI_END_REQUEST, struct.pack("!IB3x", 0, FCGI_REQUEST_COMPLETE), rid))
                slot.request_finished(len(reply), 0.0, 0.0)
            except (OSError, ValueError, ConnectionError):
                pass
            slot.set(sb.READY)
