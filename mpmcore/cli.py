"""The ``mpmlab`` command: ``dashboard`` (the default), ``serve``, ``ctl``, ``traffic``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .directives import MPMS, DirectiveError, parse_assignments, parse_httpd_conf


def _settings(args) -> dict[str, str]:
    settings: dict[str, str] = {}
    if getattr(args, "config", None):
        with open(args.config, encoding="utf-8") as f:
            settings.update(parse_httpd_conf(f.read(), args.mpm))
    settings.update(parse_assignments(getattr(args, "set", None) or []))
    return settings


def cmd_serve(args) -> int:
    from .master import Master
    try:
        master = Master(listen=args.listen, mpm=args.mpm, settings=_settings(args), tls_listen=args.tls,
                        tls_cert=args.tls_cert, tls_key=args.tls_key, log_level=args.log_level)
    except (DirectiveError, ValueError) as e:
        print(f"mpmlab: {e}", file=sys.stderr)
        return 2
    print(f"mpmlab serve: {args.mpm} on http://{args.listen}/"
          + (f" and https://{args.tls}/" if args.tls else "")
          + f"  (status: http://{args.listen}/server-status, log: {master.run_dir / 'error_log'})", file=sys.stderr)
    try:
        return master.run()
    except (OSError, RuntimeError) as e:
        print(f"mpmlab: {e}", file=sys.stderr)
        return 1


def cmd_ctl(args) -> int:
    from .master import control_path, ctl_request
    try:
        path = control_path(args.server)
        req: dict = {"cmd": args.action}
        if args.action == "switch":
            if not args.mpm:
                print("mpmlab ctl switch needs an MPM: prefork, worker or event", file=sys.stderr)
                return 2
            req["mpm"] = args.mpm
        elif args.mpm:
            req["mpm"] = args.mpm
        settings = {}
        if args.config:
            with open(args.config, encoding="utf-8") as f:
                settings.update(parse_httpd_conf(f.read(), args.mpm or ctl_request(path, {"cmd": "status"})["mpm"]))
        settings.update(parse_assignments(args.set or []))
        if settings:
            req["set"] = settings
        answer = ctl_request(path, req)
    except (DirectiveError, RuntimeError, OSError) as e:
        print(f"mpmlab ctl: {e}", file=sys.stderr)
        return 1
    if args.json or args.action == "status":
        print(json.dumps(answer, indent=2))
    elif answer.get("ok"):
        print(f"ok: {args.action}" + (f", generation {answer['generation']} runs {answer['mpm']}" if "generation" in answer else ""))
        for w in answer.get("warnings", []):
            print(f"warning: {w}")
    if not answer.get("ok"):
        print(f"mpmlab ctl: {answer.get('error')}", file=sys.stderr)
        return 1
    return 0


def cmd_dashboard(args) -> int:
    """Fill what the command line left unsaid from MPMLAB_* variables and the TOML file
    (``--config-file``; precedence CLI > environment > file > default), then run the dashboard."""
    from .settings_file import ConfigError, apply_defaults, explicit_options
    from app.main import run_dashboard

    parser = argparse.ArgumentParser(prog="mpmlab dashboard", add_help=False)
    add_dashboard_options(parser)
    argv = _DASHBOARD_ARGV.get("argv")
    try:
        apply_defaults(args, given=explicit_options(parser, argv) if argv is not None else None)
    except ConfigError as e:
        print(f"mpmlab dashboard: {e}", file=sys.stderr)
        return 2
    return run_dashboard(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpmlab", description="See how Apache httpd's MPMs behave under real traffic.")
    p.add_argument("--version", action="version", version=f"mpmlab {__version__}")
    sub = p.add_subparsers(dest="command")

    def directive_opts(sp, mpm_default: str | None):
        sp.add_argument("--mpm", choices=MPMS, default=mpm_default, help="the MPM to run")
        sp.add_argument("--config", metavar="FILE", help="an httpd.conf excerpt (MPM sections are read)")
        sp.add_argument("--set", action="append", metavar="Directive=value",
                        help="set an Apache directive, e.g. --set MaxRequestWorkers=64 (repeatable)")

    s = sub.add_parser("serve", help="run the embedded server core alone")
    s.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080)")
    s.add_argument("--tls", metavar="HOST:PORT", help="also serve HTTPS here (self-signed certificate unless given)")
    s.add_argument("--tls-cert", help="PEM certificate for --tls")
    s.add_argument("--tls-key", help="PEM key for --tls")
    s.add_argument("--log-level", default="info", choices=["error", "warn", "notice", "info", "debug"])
    directive_opts(s, "prefork")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("ctl", help="control a running server: switch, graceful, restart, stop, graceful-stop, status")
    c.add_argument("action", choices=["status", "switch", "graceful", "restart", "stop", "graceful-stop", "check"])
    c.add_argument("mpm", nargs="?", choices=MPMS, help="for switch: the MPM to switch to")
    c.add_argument("--server", metavar="HOST:PORT", help="the server's listen address (needed when several run)")
    c.add_argument("--config", metavar="FILE", help="an httpd.conf excerpt to apply")
    c.add_argument("--set", action="append", metavar="Directive=value")
    c.add_argument("--json", action="store_true", help="print the answer as JSON")
    c.set_defaults(func=cmd_ctl)

    from .traffic.cli import add_parser as add_traffic, run as run_traffic
    add_traffic(sub).set_defaults(func=run_traffic)

    d = sub.add_parser("dashboard", help="the dashboard with the embedded server core (the default)")
    add_dashboard_options(d)
    d.set_defaults(func=cmd_dashboard)
    return p


#: The dashboard's own part of the command line, as its subparser saw it (``explicit_options`` tells
#: the flags the user gave from argparse's defaults with it). Kept out of the Namespace on purpose:
#: every attribute there is an option with an environment variable and a file key.
_DASHBOARD_ARGV: dict[str, list[str]] = {}


def add_dashboard_options(d: argparse.ArgumentParser) -> None:
    d.add_argument("--host", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8000, help="dashboard port (default 8000)")
    d.add_argument("--mpm", choices=MPMS, default="event", help="MPM the embedded core starts with")
    d.add_argument("--core-listen", default="127.0.0.1:8080", help="where the embedded core listens")
    d.add_argument("--set", action="append", metavar="Directive=value")
    d.add_argument("--attach", action="append", metavar="[NAME=][apache+|nginx+]URL",
                   help="also watch a real server: Apache's /server-status or nginx's stub_status "
                        "(repeatable; loopback only unless --allow-remote-attach)")
    d.add_argument("--attach-interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between polls of each attached server (0.1-60, default 1)")
    d.add_argument("--allow-remote-attach", action="store_true",
                   help="allow --attach to servers that are not on this machine (traffic is still loopback only)")
    d.add_argument("--no-core", action="store_true",
                   help="do not start the embedded core: with --attach, show the attached servers only; "
                        "without, watch an `mpmlab serve` already running on --core-listen")
    d.add_argument("--token", help="control token (required when --host is not loopback)")
    d.add_argument("--fps", type=float, default=20, metavar="N",
                   help="scoreboard frames per second sent to browsers (1-30, default 20)")
    d.add_argument("--config-file", metavar="FILE",
                   help="TOML file with the same names as these flags (also MPMLAB_CONFIG_FILE); "
                        "every flag also reads MPMLAB_<NAME>, e.g. MPMLAB_PORT")

    parse = d.parse_known_args

    def parse_known_args(args=None, namespace=None):  # remember what this parser was given
        _DASHBOARD_ARGV["argv"] = list(sys.argv[1:] if args is None else args)
        return parse(args, namespace)

    d.parse_known_args = parse_known_args  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["dashboard", *argv]  # plain `mpmlab` is the dashboard
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
