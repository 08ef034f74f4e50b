"""``mpmlab traffic PATTERN --target URL [options]``: run one pattern from the command line.

``mpmcore/cli.py`` wires ``add_parser``/``run`` into the ``mpmlab`` command; this module also runs
alone: ``python -m mpmcore.traffic.cli PATTERN --target URL ...``.

Like the dashboard, the CLI drives a runner subprocess through the control API (TrafficRunner +
TrafficClient). A progress line goes to stderr once a second; the summary table (or ``--json``)
to stdout at the end. Ctrl-C stops the pattern and still prints the summary.

Exit status: 0 when the run ended and no ``--fail-on`` threshold failed; 99 when one did (k6's
code, see ``thresholds.py``); 130 after Ctrl-C (SIGINT) and 143 after SIGTERM, as shells report
them (the summary and the thresholds are still printed); 2 for a usage error; 1 when the runner
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import textwrap
from typing import Any

from mpmcore.traffic.catalogue import PATTERNS, ParamSpec, _num, validate_params
from mpmcore.traffic.control import TrafficClient, TrafficError, TrafficRunner
from mpmcore.traffic.limits import MAX_CONNECTIONS, MAX_DURATION, MAX_RATE, MAX_TOTAL_REQUESTS
from mpmcore.traffic.runstats import LatencySummary, RunInfo, RunState
from mpmcore.traffic.target import TargetError, resolve_target_sync
from mpmcore.traffic.thresholds import EXIT_THRESHOLDS, Threshold, ThresholdError, check_all, parse_thresholds

__all__ = ["add_parser", "main", "run"]


def _all_options() -> dict[str, tuple[ParamSpec, list[str], str]]:
    """param name -> (first spec seen, [patterns using it], help text covering every use)"""
    out: dict[str, tuple[ParamSpec, list[str], list[tuple[str, ParamSpec]]]] = {}
    for pname, pat in PATTERNS.items():
        for name, spec in pat.params.items():
            out.setdefault(name, (spec, [], []))
            out[name][1].append(pname)
            out[name][2].append((pname, spec))
    result = {}
    for name, (spec, users, uses) in out.items():
        texts = {(s.help, _range(s)) for _p, s in uses}
        if len(texts) == 1:
            where = "" if len(users) == len(PATTERNS) else f" [{', '.join(users)}]"
            text = f"{spec.help}{_range(spec)}{where}"
        else:
            text = "; ".join(f"{p}: {s.help}{_range(s)}" for p, s in uses)
        result[name] = (spec, users, text)
    return result


def _range(spec: ParamSpec) -> str:
    if spec.choices:
        return f" ({'|'.join(spec.choices)})"
    if spec.min is not None:
        unit = f" {spec.unit}" if spec.unit else ""
        return f" ({_num(spec.min)}..{_num(spec.max)}{unit}, default {spec.default})"
    return ""


def _epilog() -> str:
    lines = ["patterns:"]
    for name, pat in PATTERNS.items():
        lines.append(f"  {name}")
        lines.extend(textwrap.wrap(pat.description, 92, initial_indent="      ",
                                   subsequent_indent="      "))
        own = [s for s in pat.params.values()
               if s.name not in ("target", "duration", "max_requests", "timeout", "allow_remote",
                                 "tls_verify", "tls_cafile", "label")]
        opts = ", ".join(f"--{s.name.replace('_', '-')}={s.default}" for s in own)
        lines.extend(textwrap.wrap("options (default): " + opts, 92, initial_indent="      ",
                                   subsequent_indent="        "))
    lines.append("")
    lines.append(f"hard caps: MAX_CONNECTIONS={MAX_CONNECTIONS}, MAX_RATE={MAX_RATE} req/s, "
                 f"MAX_TOTAL_REQUESTS={MAX_TOTAL_REQUESTS}, MAX_DURATION={MAX_DURATION:g}s")
    lines.append("durations accept 30, 30s, 500ms, 2m; sizes accept 4096, 4k, 10MiB")
    lines.append("example: mpmlab traffic steady --target http://127.0.0.1:8080/ --clients 50 --duration 10s")
    lines.append("         mpmlab traffic steady --target http://127.0.0.1:8080/ --fail-on 'p99>200ms,errors>1%'")
    lines.append("exit status: 0 ok, 99 a --fail-on threshold failed, 130 interrupted (Ctrl-C), 143 SIGTERM,")
    lines.append("             2 usage error, 1 the runner failed")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``traffic`` sub-command to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "traffic", help="generate HTTP traffic against a (loopback) server",
        description="Generate HTTP traffic with one pattern against a server (loopback only unless "
                    "--allow-remote). Every request carries X-Traffic-Pattern: <pattern>.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)
    return p


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", choices=list(PATTERNS), metavar="PATTERN",
                   help="one of: " + ", ".join(PATTERNS))
    for name, (spec, _users, text) in _all_options().items():
        flag = "--" + name.replace("_", "-")
        text = text.replace("%", "%%")
        if spec.type == "bool":
            if spec.default:
                p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=text + " (default on)")
            else:
                p.add_argument(flag, dest=name, action="store_true", default=None, help=text)
        else:
            meta = {"duration": "SECONDS", "size": "BYTES", "int": "N", "float": "X"}.get(spec.type, "VALUE")
            p.add_argument(flag, dest=name, default=None, metavar=meta,
                           required=spec.required, help=text)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.add_argument("--fail-on", dest="fail_on", metavar="CONDITIONS", default=None,
                   help="comma-separated conditions that fail the run (exit 99), e.g. "
                        "'p99>200ms,errors>1%%,rps<100'; metrics: p50 p90 p99 p99.9 max mean, "
                        "corrected_p99, ttfb_p99, ..., errors, 5xx, 4xx, non_2xx (count or %%), rps, responses")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    pat = PATTERNS[args.pattern].params
    params, wrong = {}, []
    for name in _all_options():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in pat:
            params[name] = value
        else:
            wrong.append("--" + name.replace("_", "-"))
    if wrong:
        raise ValueError(f"{args.pattern}: option(s) {', '.join(wrong)} do not apply to this pattern "
                         f"(see mpmlab traffic --help)")
    return params


def _ms(d: LatencySummary | None, key: str) -> str:
    return "-" if d is None else f"{getattr(d, key):.2f}ms"


def _progress(p: RunInfo) -> str:
    live, tot = p.live, p.total
    if live is None or tot is None:  # a frame's entries carry both
        return f"[{p.elapsed:6.1f}s] {p.id}"
    lat = live.latency_ms or tot.latency_ms
    cor = live.corrected_latency_ms
    s = (f"[{p.elapsed:6.1f}s] {p.id}  {live.rps:9.1f} resp/s  conns {p.active_connections:5d}"
         f"  p50 {_ms(lat, 'p50')} p99 {_ms(lat, 'p99')}")
    if cor:
        s += f"  corrected p99 {_ms(cor, 'p99')}"
    st = tot.status
    s += f"  2xx {st['2xx']} 3xx {st['3xx']} 4xx {st['4xx']} 5xx {st['5xx']}  errors {tot.errors_total}"
    if tot.dropped:
        s += f"  dropped {tot.dropped}"
    if tot.reconnects:
        s += f"  reconnects {tot.reconnects}"
    return s


def format_summary(s: RunInfo) -> str:
    t = s.total
    if t is None:  # stop() and get() answers carry the totals
        raise TrafficError(f"{s.id}: the runner sent no figures")
    rows = [
        ("pattern", f"{s.pattern} ({s.id}, X-Traffic-Pattern: {s.label})"),
        ("target", f"{s.target} -> {s.address}"),
        ("ended", f"{s.stop_reason} after {s.elapsed:.2f}s" + (f" ({s.error})" if s.error else "")),
        ("requests", f"{t.requests}  ({t.requests_per_s:.1f}/s)"),
        ("responses", f"{t.responses}  ({t.rps:.1f}/s)"),
        ("status", "  ".join(f"{k} {v}" for k, v in t.status.items())),
        ("errors", f"{t.errors_total}  " + "  ".join(f"{k} {v}" for k, v in t.errors.items() if v)),
        ("connections", f"opened {t.connections_opened}  peak {s.peak_connections}  "
                        f"reconnects {t.reconnects}"),
        ("bytes", f"in {t.bytes_in}  out {t.bytes_out}"),
    ]
    if t.arrivals:
        rows.append(("arrivals", f"{t.arrivals}  dropped {t.dropped}  late {t.late}"))
    if t.corrupted:
        rows.append(("corrupted", f"{t.corrupted}  (X-Unsafe-Corrupted: another request's state leaked)"))
    out = [f"{k:<12} {v}" for k, v in rows]
    out.append("")
    out.append(f"{'latency':<22}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}{'max':>10}{'mean':>10}")
    for label, d in (("total", t.latency_ms), ("corrected (open)", t.corrected_latency_ms),
                     ("time to first byte", t.ttfb_ms), ("connect", t.connect_ms)):
        if d:
            out.append(f"{label:<22}" + "".join(f"{v:>8.2f}ms" for v in (d.p50, d.p90, d.p99, d.p99_9, d.max, d.mean)))
    return "\n".join(out)


async def _drive(runner: TrafficRunner, args: argparse.Namespace,
                 params: dict[str, Any]) -> tuple[RunInfo, signal.Signals | None]:
    """Run the pattern to its end; also returns the signal that stopped it early, if one did."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    got: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        got.append(sig)
        interrupted.set()

    loop.add_signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    loop.add_signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    try:
        async with await TrafficClient.connect(runner.socket_path) as tc:
            pid = await tc.start(args.pattern, **params)
            frames = tc.frames().__aiter__()
            last_progress = 0.0
            intr = asyncio.ensure_future(interrupted.wait())
            try:
                while True:
                    nxt = asyncio.ensure_future(frames.__anext__())
                    await asyncio.wait({nxt, intr}, return_when=asyncio.FIRST_COMPLETED)
                    if intr.done():
                        nxt.cancel()
                        if not args.quiet:
                            print("\ninterrupted: stopping", file=sys.stderr)
                        return await tc.stop(pid), got[0]
                    try:
                        frame = nxt.result()
                    except StopAsyncIteration:
                        raise TrafficError("the runner closed the connection") from None
                    for p in frame.patterns:
                        if p.id != pid:
                            continue
                        if p.state is RunState.FINISHED:
                            if not args.quiet:
                                print(file=sys.stderr)
                            return await tc.get(pid), None
                        if not args.quiet and p.elapsed - last_progress >= 1.0:
                            last_progress = p.elapsed
                            end = "\r" if sys.stderr.isatty() else "\n"
                            print(_progress(p), end=end, file=sys.stderr, flush=True)
            finally:
                intr.cancel()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    """Run the pattern described by parsed ``args``; returns the exit status."""
    try:
        params = _params(args)
        checked = validate_params(args.pattern, params)  # fail fast, before spawning anything
        resolve_target_sync(checked["target"], allow_remote=checked["allow_remote"])
        thresholds: list[Threshold] = [] if args.fail_on is None else parse_thresholds(args.fail_on)
    except (ValueError, TargetError, ThresholdError) as exc:
        print(f"mpmlab traffic: error: {exc}", file=sys.stderr)
        return 2
    runner = TrafficRunner()
    try:
        runner.start()
        summary, stopped_by = asyncio.run(_drive(runner, args, params))
    except ValueError as exc:
        print(f"mpmlab traffic: error: {exc}", file=sys.stderr)
        return 2
    except TrafficError as exc:
        print(f"mpmlab traffic: runner failed: {exc}", file=sys.stderr)
        return 1
    finally:
        runner.close()
    outcomes = check_all(thresholds, summary) if thresholds else []
    if args.json:
        doc = summary.to_json()
        if outcomes:
            doc["thresholds"] = [{"condition": o.threshold.text, "measured": o.measured, "failed": o.failed}
                                 for o in outcomes]
        print(json.dumps(doc, indent=2))
    else:
        print(format_summary(summary))
        if outcomes:
            print()
            print("thresholds (--fail-on)")
            for o in outcomes:
                print(o.line())
    if stopped_by is not None:
        return 128 + int(stopped_by)
    return EXIT_THRESHOLDS if any(o.failed for o in outcomes) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpmlab")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["traffic", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
