"""The ``mpmlab`` command: ``dashboard`` (the default), ``serve``, ``ctl``, ``traffic``, ``experiment``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mpmcore import __version__
from mpmcore.directives import MPMS, DirectiveError, parse_assignments
from mpmcore.httpdconf import read_httpd_conf
from mpmcore.master import Master, control_path, ctl_request
from mpmcore.traffic.cli import add_parser as add_traffic
from mpmcore.traffic.cli import run as run_traffic


class UsageError(Exception):
    """A bad path, file or value on the command line: one line on stderr, exit status 2."""


def _read_config(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a text file (UTF-8 expected)") from None
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None


def _conf(path: str, mpm: str) -> dict[str, str]:
    """The directives of an httpd.conf that apply to ``mpm``; every error at once; what is ignored
    counted on stderr (the dashboard's httpd.conf tab lists it line by line)."""
    conf = read_httpd_conf(_read_config(path), mpm)
    if conf.errors:
        raise UsageError(f"--config {path}: " + "; ".join(str(e) for e in conf.errors))
    skipped = len(conf.ignored) + len(conf.other_mpm_blocks)
    if skipped:
        print(f"mpmlab: --config {path}: {len(conf.settings)} directive(s) for {mpm} applied, {len(conf.ignored)} "
              f"line(s) ignored, {len(conf.other_mpm_blocks)} block(s) for other MPMs skipped", file=sys.stderr)
    return conf.settings


def _settings(args: argparse.Namespace) -> dict[str, str]:
    settings: dict[str, str] = {}
    if getattr(args, "config", None):
        settings.update(_conf(args.config, args.mpm))
    settings.update(parse_assignments(getattr(args, "set", None) or []))
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        master = Master(listen=args.listen, mpm=args.mpm, settings=_settings(args), tls_listen=args.tls,
                        tls_cert=args.tls_cert, tls_key=args.tls_key, log_level=args.log_level)
    except (DirectiveError, ValueError, UsageError) as e:
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


def cmd_ctl(args: argparse.Namespace) -> int:
    try:
        if args.config:
            _read_config(args.config)  # a bad path is a usage error before the server is looked for
        path = control_path(args.server)
        req: dict[str, Any] = {"cmd": args.action}
        if args.action == "switch":
            if not args.mpm:
                print("mpmlab ctl switch needs an MPM: prefork, worker or event", file=sys.stderr)
                return 2
            req["mpm"] = args.mpm
        elif args.mpm:
            req["mpm"] = args.mpm
        settings = {}
        if args.config:
            settings.update(_conf(args.config, args.mpm or ctl_request(path, {"cmd": "status"})["mpm"]))
        settings.update(parse_assignments(args.set or []))
        if settings:
            req["set"] = settings
        answer = ctl_request(path, req)
    except UsageError as e:
        print(f"mpmlab ctl: {e}", file=sys.stderr)
        return 2
    except (DirectiveError, RuntimeError, OSError) as e:
        print(f"mpmlab ctl: {e}", file=sys.stderr)
        return 1
    if args.json or args.action == "status":
        print(json.dumps(answer, indent=2))
    elif answer.get("ok"):
        print(f"ok: {args.action}" + (f", generation {answer['generation']} runs {answer['mpm']}" if "generation" in answer else ""))
        for w in answer.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
    if not answer.get("ok"):
        print(f"mpmlab ctl: {answer.get('error')}", file=sys.stderr)
        return 1
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Fill what the command line left unsaid from MPMLAB_* variables and the TOML file
    (``--config-file``; precedence CLI > environment > file > default), then run the dashboard."""
    # the dashboard (FastAPI, uvicorn, Jinja2) loads only for this command: serve and ctl stay light
    from mpmlab.config_file import ConfigError, apply_defaults, given_options
    from mpmlab.main import run_dashboard

    try:
        apply_defaults(args, given=given_options(args))
    except ConfigError as e:
        print(f"mpmlab dashboard: {e}", file=sys.stderr)
        return 2
    return run_dashboard(args)


#: commands that need no experiment machinery: their start-up does not import it (~0.2 s; every
#: core an experiment or the dashboard starts is an ``mpmlab serve``)
LIGHT_COMMANDS = ("serve", "ctl")


def build_parser(light: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``light``: the ``experiment`` command as a name only (for serve and ctl)."""
    p = argparse.ArgumentParser(prog="mpmlab", description="See how Apache httpd's MPMs behave under real traffic.")
    p.add_argument("--version", action="version", version=f"mpmlab {__version__}")
    sub = p.add_subparsers(dest="command")

    def directive_opts(sp: argparse.ArgumentParser, mpm_default: str | None) -> None:
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

    add_traffic(sub).set_defaults(func=run_traffic)
    if light:
        sub.add_parser("experiment", help="run one traffic plan against several servers, record and compare")
    else:
        from mpmcore.experiments.cli import add_parser as add_experiment

        add_experiment(sub)  # sets its own func

    d = sub.add_parser("dashboard", help="the dashboard with the embedded server core (the default)")
    add_dashboard_options(d)
    d.set_defaults(func=cmd_dashboard)
    # Bare flags start the dashboard (`mpmlab --port 9000` is `mpmlab dashboard --port 9000`), so
    # `mpmlab --help` lists its flags too.
    flags = "\n".join(line for line in d.format_help().split("options:", 1)[-1].splitlines()
                      if not line.lstrip().startswith("-h, --help"))
    p.epilog = ("With no command, or with only the dashboard's flags, mpmlab starts the dashboard.\n"
                "dashboard options (mpmlab [options] = mpmlab dashboard [options]):" + flags)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def add_dashboard_options(d: argparse.ArgumentParser) -> None:
    """The dashboard's flags. Their argparse default is None ("not given"): the real defaults live
    in ``mpmlab.config_file.OPTIONS``, applied after MPMLAB_* variables and the TOML file had their say."""
    from mpmlab.config_file import OPTIONS  # the dashboard's module: see cmd_dashboard

    def default(dest: str) -> str:
        v = OPTIONS[dest].default
        return f" (default {v})" if v not in (None, [], False) else ""

    d.add_argument("--host", help="dashboard address" + default("host"))
    d.add_argument("--port", type=int, help="dashboard port" + default("port"))
    d.add_argument("--mpm", choices=MPMS, help="MPM the embedded core starts with" + default("mpm"))
    d.add_argument("--core-listen", help="where the embedded core listens" + default("core_listen"))
    d.add_argument("--set", action="append", metavar="Directive=value", help="an Apache directive for the core")
    d.add_argument("--attach", action="append", metavar="[NAME=][apache+|nginx+|lighttpd+|locust+]URL",
                   help="also watch a real server: Apache's or lighttpd's /server-status, nginx's stub_status, or a "
                        "Locust master's web UI (locust+URL) "
                        "(repeatable; loopback only unless --allow-remote-attach)")
    d.add_argument("--attach-interval", type=float, metavar="SECONDS",
                   help="seconds between polls of each attached server (0.1-60)" + default("attach_interval"))
    d.add_argument("--allow-remote-attach", action="store_true", default=None,
                   help="allow --attach to servers that are not on this machine (traffic is still loopback only)")
    d.add_argument("--no-core", action="store_true", default=None,
                   help="do not start the embedded core: with --attach, show the attached servers only; "
                        "without, watch an `mpmlab serve` already running on --core-listen")
    d.add_argument("--token", help="control token, 8+ characters (also MPMLAB_TOKEN; required when --host is "
                                   "not loopback). Without it a random one is made at every start and printed "
                                   "in the dashboard's URL")
    d.add_argument("--no-token", action="store_true", default=None,
                   help="no control token: any local process of any user may switch MPM, restart, start "
                        "traffic (the behaviour before tokens; loopback only)")
    d.add_argument("--access-log", action="store_true", default=None,
                   help="print uvicorn's access log on stderr (tokens in it are redacted)")
    d.add_argument("--fps", type=float, metavar="N",
                   help="scoreboard frames per second sent to browsers (1-30)" + default("fps"))
    d.add_argument("--runs-db", metavar="PATH",
                   help="the run store: experiment runs and recorded sessions (SQLite; default "
                        "$XDG_DATA_HOME/mpmlab/runs.sqlite3, i.e. ~/.local/share/mpmlab/runs.sqlite3)")
    d.add_argument("--config-file", metavar="FILE",
                   help="TOML file with the same names as these flags (also MPMLAB_CONFIG_FILE); "
                        "every flag also reads MPMLAB_<NAME>, e.g. MPMLAB_PORT")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["dashboard", *argv]  # plain `mpmlab` is the dashboard
    args = build_parser(light=argv[0] in LIGHT_COMMANDS).parse_args(argv)
    code: int | None = args.func(args)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
