"""The FastCGI records and name-value pairs (mpmcore/content/fcgi.py): every truncation, oversize and
garbage input is a FastCGIError, never IndexError or struct.error."""

from __future__ import annotations

import random
import socket
import struct

import pytest

from mpmcore.content import fcgi
from mpmcore.content.fcgi import FastCGIError, decode_params, encode_params, read_record, record

PARAMS = {"QUERY_STRING": "id=1&ms=0", "A": "", "LONG_NAME_" + "N" * 130: "v" * 300, "B": "x" * 127}


def _boundaries(params: dict[str, str]) -> set[int]:
    """The byte offsets where a pair of encode_params(params) ends."""
    out, n = {0}, 0
    for k, v in params.items():
        n += len(encode_params({k: v}))
        out.add(n)
    return out


def test_round_trip() -> None:
    assert decode_params(encode_params(PARAMS)) == PARAMS


@pytest.mark.parametrize("cut", range(len(encode_params(PARAMS))))
def test_every_truncation_is_a_clear_error(cut: int) -> None:
    data = encode_params(PARAMS)[:cut]
    if cut in _boundaries(PARAMS):
        got = decode_params(data)
        assert got == dict(list(PARAMS.items())[:len(got)])
    else:
        with pytest.raises(FastCGIError, match=r"truncated|declares"):
            decode_params(data)


@pytest.mark.parametrize("data, why", [
    (b"\x80", "four-byte name length"),
    (b"\x80\x00\x00", "four-byte name length"),
    (b"\x01", "value length missing"),
    (b"\x01\x80\x00", "four-byte value length"),
    (b"\x05\x01ab", "declares 5\\+1"),
    (b"\xff\xff\xff\xff\x00", "declares 2147483647\\+0"),  # a 2 GiB name in a 5-byte stream
    (b"\x01\xff\xff\xff\xffk", "declares 1\\+2147483647"),
    (b"\x00\x01v", "empty name"),
])
def test_malformed_pairs(data: bytes, why: str) -> None:
    with pytest.raises(FastCGIError, match=why):
        decode_params(data)


def test_oversized_stream_and_too_many_pairs() -> None:
    with pytest.raises(FastCGIError, match="exceeds"):
        decode_params(b"\x01\x00k" * (fcgi.MAX_PARAMS // 3 + 1))
    with pytest.raises(FastCGIError, match="more than"):
        decode_params(b"".join(encode_params({f"k{i}": ""}) for i in range(fcgi.MAX_PAIRS + 1)))


def test_garbage_never_raises_anything_else() -> None:
    rng = random.Random(14)
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 40))
        try:
            decode_params(data)
        except FastCGIError:
            pass


def _read_from(data: bytes) -> tuple[int, int, bytes]:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        b.settimeout(5)
        return read_record(b)


def test_read_record_whole() -> None:
    assert _read_from(record(fcgi.FCGI_STDOUT, b"hello", 3)) == (fcgi.FCGI_STDOUT, 3, b"hello")


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 12, 13, 15])  # header 8, content 5, padding 3
def test_read_record_truncated(cut: int) -> None:
    with pytest.raises(FastCGIError, match="mid-record"):
        _read_from(record(fcgi.FCGI_STDOUT, b"hello", 3)[:cut])


def test_read_record_bad_header() -> None:
    with pytest.raises(fcgi.PeerClosed):
        _read_from(b"")
    with pytest.raises(FastCGIError, match="version byte 2"):
        _read_from(struct.pack("!BBHHBx", 2, fcgi.FCGI_STDOUT, 1, 0, 0))
    with pytest.raises(FastCGIError, match="unknown record type 99"):
        _read_from(struct.pack("!BBHHBx", 1, 99, 1, 0, 0))
    with pytest.raises(FastCGIError, match="version byte 71"):
        _read_from(b"GET / HTTP/1.1\r\n\r\n")
