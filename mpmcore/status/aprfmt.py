"""Numbers and times as Apache prints them: APR's own printf and mod_status' formats.

Apache prints through APR's printf (``apr_vformatter``, srclib/apr/strings/apr_snprintf.c), not
libc's: its ``%g`` has no leading zero (``.722222``) and switches to exponent form at other
places than C's. mod_status computes its rates in C ``float``. Both are emulated here (``apr_g``,
``apr_f``, ``f32``, ``fdiv``) so that our numbers read exactly as Apache's would for the same
counters. ``format_byte_out``/``format_kbyte_out``/``show_time`` are mod_status.c's helpers of the
same names; ``ht_time`` is server/util.c's ap_ht_time; ``escape_logitem`` is ap_escape_logitem.
"""

from __future__ import annotations

import math
import os
import struct
import time

KBYTE = 1024
MBYTE = 1048576
GBYTE = 1073741824
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # Apache's times() tick

_NDIG = 80


def _cvt(arg: float, ndigits: int, eflag: bool) -> tuple[str, int, bool]:
    """APR's apr_cvt (the UNIX V7 algorithm): digits, decimal point position, sign.

    ``eflag``: ``ndigits`` significant digits (ecvt); otherwise ``ndigits`` after the point (fcvt).
    Digits come from repeated modf, so they round exactly as APR's do."""
    if ndigits >= _NDIG - 1:
        ndigits = _NDIG - 2
    r2 = 0
    sign = arg < 0
    if sign:
        arg = -arg
    buf = ["0"] * (_NDIG + 1)
    p = 0
    arg, fi = math.modf(arg)
    if fi != 0:
        ints: list[str] = []
        while len(ints) < _NDIG and fi != 0:
            fj, fi = math.modf(fi / 10)
            ints.append(chr(int((fj + .03) * 10) + 48))
            r2 += 1
        for ch in reversed(ints):
            buf[p] = ch
            p += 1
    elif arg > 0:
        while arg * 10 < 1:
            arg *= 10
            r2 -= 1
    p1 = ndigits if eflag else ndigits + r2
    if p1 < 0:
        return "", -ndigits, sign
    decpt = r2
    while p <= p1 and p < _NDIG:
        arg, fj = math.modf(arg * 10)
        buf[p] = chr(int(fj) + 48)
        p += 1
    if p1 >= _NDIG:
        return "".join(buf[:_NDIG - 1]), decpt, sign
    p = p1
    buf[p1] = chr(ord(buf[p1]) + 5)
    while buf[p1] > "9":
        buf[p1] = "0"
        if p1 > 0:
            p1 -= 1
            buf[p1] = chr(ord(buf[p1]) + 1)
        else:
            buf[p1] = "1"
            decpt += 1
            if not eflag:
                if p > 0:
                    buf[p] = "0"
                p += 1
    return "".join(buf[:p]), decpt, sign


def apr_g(x: float, ndigit: int = 6) -> str:
    """``%g`` (``%.Ng``) as APR prints it: ``.5`` not ``0.5``; exponent form only when the point
    is more than 4 places right of the digits or 4 left of the first one ("1.e+6", "1.5e-5")."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    digits, decpt, sign = _cvt(x, ndigit, True)
    out = ["-"] if sign else []
    nd = ndigit
    i = nd - 1
    while i > 0 and digits[i] == "0":
        nd -= 1
        i -= 1
    if (decpt >= 0 and decpt - nd > 4) or (decpt < 0 and decpt < -3):
        decpt -= 1
        out += [digits[0], ".", digits[1:nd], "e"]
        if decpt < 0:
            decpt = -decpt
            out.append("-")
        else:
            out.append("+")
        if decpt // 100 > 0:
            out.append(str(decpt // 100))
        if decpt // 10 > 0:
            out.append(str((decpt % 100) // 10))
        out.append(str(decpt % 10))
    else:
        if decpt <= 0:
            if digits[0] != "0":
                out.append(".")
            out.append("0" * -decpt)
            decpt = 0
        for i in range(1, nd + 1):
            out.append(digits[i - 1])
            if i == decpt:
                out.append(".")
        if nd < decpt:
            out.append("0" * (decpt - nd) + ".")
    s = "".join(out)
    return s[:-1] if s.endswith(".") else s


def apr_f(x: float, prec: int) -> str:
    """``%.Nf`` as APR prints it (a leading zero, like C's)."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf"
    digits, decpt, sign = _cvt(x, prec, False)
    if decpt <= 0:
        s = "0" + ("." + "0" * -decpt if prec > 0 else "") + digits
    else:
        s = digits[:decpt] + ("." if prec > 0 else "") + digits[decpt:]
    return ("-" + s) if sign else s


_F32 = struct.Struct("f")


def f32(x: float) -> float:
    """Round to C float: mod_status computes its rates in single precision."""
    try:
        v: float = _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.inf if x > 0 else -math.inf
    return v


def fdiv(a: float, b: float) -> float:
    """C float division, division by zero included (inf, as the C code would give)."""
    a, b = f32(a), f32(b)
    if b == 0:
        return math.nan if a == 0 else math.inf
    return f32(a / b)


def ticks(seconds: float) -> int:
    return round(seconds * CLK_TCK)


def c_ulong(x: float) -> int:
    """A float as C converts it to unsigned long for printing (0 for inf/nan)."""
    return int(x) if math.isfinite(x) else 0


def format_byte_out(nbytes: int) -> str:
    if nbytes < 5 * KBYTE:
        return f"{int(nbytes)} B"
    if nbytes < MBYTE / 2:
        return f"{apr_f(fdiv(nbytes, KBYTE), 1)} kB"
    if nbytes < GBYTE / 2:
        return f"{apr_f(fdiv(nbytes, MBYTE), 1)} MB"
    return f"{apr_f(fdiv(nbytes, GBYTE), 1)} GB"


def format_kbyte_out(kbytes: int) -> str:
    if kbytes < KBYTE:
        return f"{int(kbytes)} kB"
    if kbytes < MBYTE:
        return f"{apr_f(fdiv(kbytes, KBYTE), 1)} MB"
    return f"{apr_f(fdiv(kbytes, MBYTE), 1)} GB"


def show_time(seconds: int) -> str:
    """Apache's uptime words: " 1 hour 2 minutes 3 seconds" (leading space; zero parts left out)."""
    secs = seconds % 60
    seconds //= 60
    mins = seconds % 60
    seconds //= 60
    hrs = seconds % 24
    days = seconds // 24
    out = []
    for n, unit in ((days, "day"), (hrs, "hour"), (mins, "minute"), (secs, "second")):
        if n:
            out.append(f" {n} {unit}{'' if n == 1 else 's'}")
    return "".join(out)


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def ht_time(t: float) -> str:
    """ap_ht_time(t, "%A, %d-%b-%Y %H:%M:%S %Z", local): C-locale names whatever the locale."""
    tm = time.localtime(t)
    return (f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d}-{_MONTHS[tm.tm_mon - 1]}-{tm.tm_year} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tm.tm_zone}")



def escape_logitem(raw: bytes) -> str:
    """ap_escape_logitem: control bytes, bytes >= 0x7f, quotes and backslashes as escapes, so a
    request line from a client is printable ASCII before it is HTML-escaped."""
    out = []
    for b in raw:
        if b == 0x22:
            out.append('\\"')
        elif b == 0x5C:
            out.append("\\\\")
        elif b == 0x08:
            out.append("\\b")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x09:
            out.append("\\t")
        elif b == 0x0B:
            out.append("\\v")
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\x{b:02x}")
        else:
            out.append(chr(b))
    return "".join(out)


