"""The dashboard's configuration from a TOML file and environment variables, with the CLI's names.

Every dashboard flag (``mpmlab.cli.add_dashboard_options``) has an environment variable and a file
key of the same name: ``--core-listen`` is ``MPMLAB_CORE_LISTEN`` and ``core_listen``. Precedence,
per option: command line > environment > file > built-in default. Directives are merged per
directive name in the same order (``[directives]`` in the file, ``MPMLAB_SET``, ``--set``).

    # mpmlab.toml
    host = "0.0.0.0"
    port = 8000
    mpm = "event"
    core_listen = "127.0.0.1:8080"
    token = "change-me-please"      # none given: a random one at every start; no_token = true: none
    attach = ["apache=http://127.0.0.1:8081/server-status",
              { url = "http://127.0.0.1:8082/nginx_status", name = "nginx", kind = "nginx" }]
    attach_interval = 1.0
    allow_remote_attach = false

    [directives]
    MaxRequestWorkers = 64
    KeepAliveTimeout = 5

    MPMLAB_PORT=9000 MPMLAB_ATTACH="http://127.0.0.1:8081/server-status,http://127.0.0.1:8082/nginx_status" \\
    MPMLAB_SET="MaxRequestWorkers=64,KeepAliveTimeout=5" mpmlab --config-file mpmlab.toml

``apply_defaults(args, env, path)`` fills an argparse Namespace; a bad value raises ConfigError
naming where it came from (``MPMLAB_PORT``, ``mpmlab.toml: port``) and what is allowed.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mpmcore.directives import MPMS, DirectiveError, canonical
from mpmcore.sources.attach import parse_spec
from mpmcore.traffic.target import TargetError, parse_url

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "OPTIONS",
    "ConfigError",
    "apply_defaults",
    "env_name",
    "given_options",
    "load_file",
]

ENV_PREFIX = "MPMLAB_"
CONFIG_FILE_ENV = "MPMLAB_CONFIG_FILE"  # --config-file


class ConfigError(ValueError):
    """A configuration value is wrong; ``key`` names it as the user wrote it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


# -- value checks (each returns the clean value or raises ValueError with what is allowed) ------
def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, not {type(v).__name__}")
    return v.strip()


def _port(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("must be an integer between 1 and 65535")
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ValueError(f"must be an integer between 1 and 65535, not {v!r}") from None
    if (isinstance(v, float) and v != n) or not 1 <= n <= 65535:
        raise ValueError(f"must be an integer between 1 and 65535, not {v!r}")
    return n


def _mpm(v: Any) -> str:
    s = _str(v).lower()
    if s not in MPMS:
        raise ValueError(f"must be one of {', '.join(MPMS)}, not {v!r}")
    return s


def _listen(v: Any) -> str:
    s = _str(v)
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be HOST:PORT (e.g. 127.0.0.1:8080), not {v!r}")
    _port(port)
    return s


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off), not {v!r}")


def _float_range(lo: float, hi: float, unit: str) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError(f"must be a number between {lo:g} and {hi:g}{unit}")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number between {lo:g} and {hi:g}{unit}, not {v!r}") from None
        if not lo <= x <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}{unit}, not {v!r}")
        return x
    return check


def _token(v: Any) -> str | None:
    s = _str(v)
    if not s:
        return None
    if len(s) < 8:
        raise ValueError("must be at least 8 characters")
    return s


def _attach_list(v: Any) -> list[str]:
    """A list of ``--attach`` specs: strings, or (file) tables {url, name, kind, threads_per_child}."""
    if isinstance(v, str):
        items: list[Any] = [x for x in (p.strip() for p in v.split(",")) if x]
    elif isinstance(v, list):
        items = v
    else:
        raise ValueError("must be a list of URLs")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            unknown = set(item) - {"url", "name", "kind", "threads_per_child"}
            if unknown:
                raise ValueError(f"entry {i + 1}: unknown key(s) {', '.join(sorted(unknown))} "
                                 "(known: url, name, kind, threads_per_child)")
            if not isinstance(item.get("url"), str) or not item["url"].strip():
                raise ValueError(f"entry {i + 1}: url is required")
            kind = item.get("kind")
            if kind not in (None, "apache", "nginx", "lighttpd", "locust"):
                raise ValueError(f"entry {i + 1}: kind must be apache, nginx, lighttpd or locust, not {kind!r}")
            spec = (f"{item['name']}=" if item.get("name") else "") + (f"{kind}+" if kind else "") + item["url"].strip()
            if item.get("threads_per_child") is not None:
                spec += f"#threads_per_child={item['threads_per_child']}"
        elif isinstance(item, str):
            spec = item.strip()
        else:
            raise ValueError(f"entry {i + 1}: must be a URL string or a table with url")
        try:
            _, _, url, _ = parse_spec(spec)
        except ValueError as e:
            raise ValueError(f"entry {i + 1}: {e}") from None
        try:
            parse_url(url)
        except TargetError as e:
            raise ValueError(f"entry {i + 1}: {str(e).replace('target: ', '')}") from None
        out.append(spec)
    return out


#: Directives whose value may contain commas.
MULTI_VALUE = {"RequestReadTimeout"}


def _is_directive(name: str) -> bool:
    try:
        canonical(name)
        return True
    except DirectiveError:
        return False


def _directives(v: Any) -> dict[str, str]:
    """``{"MaxRequestWorkers": 64}`` (file table) or ``"A=1,B=2"`` (env) -> canonical names."""
    if isinstance(v, str):
        # "A=1,B=2" (or ";" / newlines). RequestReadTimeout's value holds commas itself
        # ("header=20-40,MinRate=500"): after it, a part that does not start with a known
        # directive name belongs to its value.
        pairs: list[tuple[str, Any]] = []  # a file table's values are TOML's: bool, int, str...
        for item in (p.strip() for p in v.replace(";", ",").replace("\n", ",").split(",")):
            if not item:
                continue
            name, eq, value = item.partition("=")
            if eq and _is_directive(name):
                pairs.append((name, value))
            elif pairs and _is_directive(pairs[-1][0]) and canonical(pairs[-1][0]) in MULTI_VALUE:
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + "," + item)
            elif eq:
                pairs.append((name, value))  # an unknown directive: named in the error below
            else:
                raise ValueError(f"expected Directive=value, not {item!r}")
    elif isinstance(v, dict):
        pairs = list(v.items())
    else:
        raise ValueError("must be a table of Directive = value")
    out: dict[str, str] = {}
    for name, value in pairs:
        try:
            key = canonical(str(name))
        except DirectiveError as e:
            raise ValueError(str(e)) from None
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key}: must be a single value")
        out[key] = ("On" if value else "Off") if isinstance(value, bool) else str(value).strip()
    return out


@dataclass(frozen=True)
class Option:
    dest: str  # the argparse dest and the file key
    check: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return env_name(self.dest)


def env_name(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


#: Every option: the dashboard flags, plus attach_interval and allow_remote_attach (flags
#: --attach-interval and --allow-remote-attach for the CLI to add).
OPTIONS: dict[str, Option] = {o.dest: o for o in [
    Option("host", _str, "127.0.0.1", "dashboard address"),
    Option("port", _port, 8000, "dashboard port"),
    Option("mpm", _mpm, "event", "MPM the embedded core starts with"),
    Option("core_listen", _listen, "127.0.0.1:8080", "where the embedded core listens"),
    Option("set", _directives, None, "Apache directives ([directives] table in the file; A=1,B=2 in the env)"),
    Option("attach", _attach_list, None, "status pages to watch (list in the file; comma-separated in the env)"),
    Option("no_core", _bool, False, "do not start the embedded core"),
    Option("token", _token, None, "control token (8+ characters); none given: a random one at every start"),
    Option("no_token", _bool, False, "no control token: control open to every local process (the old default)"),
    Option("fps", _float_range(1, 30, " frames/s"), 20.0, "scoreboard frames per second"),
    Option("attach_interval", _float_range(0.1, 60, " s"), 1.0, "seconds between polls of each attached source"),
    Option("allow_remote_attach", _bool, False, "allow attaching to non-loopback servers"),
    Option("access_log", _bool, False, "uvicorn's access log on stderr (tokens redacted)"),
    Option("runs_db", _str, None, "the run store (SQLite file of experiment runs and recordings); "
                                  "none given: $XDG_DATA_HOME/mpmlab/runs.sqlite3"),
    # --config-file / MPMLAB_CONFIG_FILE: where the file is, so not a key inside it
    Option("config_file", _str, None, "the TOML configuration file"),
]}
FILE_KEYS = {k for k in OPTIONS if k not in ("set", "config_file")} | {"directives"}


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file as ``{dest: raw value}`` (``[directives]`` under ``set``); unknown keys are errors."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "configuration file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror or e}") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        hint = " (directives go in a [directives] table)" if "set" in unknown else ""
        raise ConfigError(f"{path}: {unknown[0]}", f"unknown key{hint}; known keys: {', '.join(sorted(FILE_KEYS))}")
    out = dict(data)
    if "directives" in out:
        out["set"] = out.pop("directives")
    return out


def given_options(args: argparse.Namespace) -> set[str]:
    """The options given on the command line: the dashboard's flags default to None (not given)."""
    return {dest for dest in OPTIONS if getattr(args, dest, None) not in (None, [])}


def apply_defaults(args: argparse.Namespace, env: Mapping[str, str] | None = None,
                   path: str | os.PathLike[str] | None = None, given: set[str] | None = None) -> argparse.Namespace:
    """Fill ``args`` from the environment and the TOML file where the command line said nothing.

    ``path``: the file (``--config-file``); None: ``args.config_file`` if set, else
    ``$MPMLAB_CONFIG_FILE``, else no file. ``given``: the dests given on the command line
    (``given_options``); None: an option counts as given when its value differs from the
    built-in default (so a flag repeated at its default value can be overridden by env/file).
    Every option in OPTIONS ends up set on ``args``; ``args.config_sources`` says where each came
    from ("cli", "env MPMLAB_PORT", "file mpmlab.toml", "default"). Raises ConfigError."""
    env = os.environ if env is None else env
    path_from = "argument"
    if path is None:
        if getattr(args, "config_file", None):
            path, path_from = args.config_file, "cli"
        elif env.get(CONFIG_FILE_ENV):
            path, path_from = env[CONFIG_FILE_ENV], f"env {CONFIG_FILE_ENV}"
    file_values = load_file(path) if path else {}
    if given is None:
        given = {d for d in given_options(args) if getattr(args, d) != OPTIONS[d].default}
    sources: dict[str, str] = {}

    def checked(opt: Option, raw: Any, where: str) -> Any:
        try:
            return opt.check(raw)
        except ValueError as e:
            raise ConfigError(where, str(e)) from None

    for dest, opt in OPTIONS.items():
        if dest == "set":
            continue
        if dest == "config_file":  # read above (path); recorded, not looked up again
            args.config_file = str(path) if path else None
            sources[dest] = path_from if path else "default"
            continue
        if dest in given:
            # the same checks as from the environment or the file: a clear error before anything starts
            sources[dest] = "cli"
            value = getattr(args, dest)
            setattr(args, dest, checked(opt, list(value) if isinstance(value, list) else value,
                                        "--" + dest.replace("_", "-")))
            continue
        raw_env = env.get(opt.env)
        if raw_env is not None and (raw_env.strip() != "" or opt.check is _bool):
            setattr(args, dest, checked(opt, raw_env, opt.env))
            sources[dest] = f"env {opt.env}"
        elif dest in file_values:
            setattr(args, dest, checked(opt, file_values[dest], f"{path}: {dest}"))
            sources[dest] = f"file {path}"
        else:
            if not hasattr(args, dest) or getattr(args, dest) is None:
                setattr(args, dest, list(opt.default) if isinstance(opt.default, list) else opt.default)
            sources[dest] = "default"

    # directives: merged per name, file < env < CLI
    merged: dict[str, str] = {}
    set_sources = []
    if "set" in file_values:
        merged.update(checked(OPTIONS["set"], file_values["set"], f"{path}: directives"))
        set_sources.append(f"file {path}")
    if env.get(env_name("set"), "").strip():
        merged.update(checked(OPTIONS["set"], env[env_name("set")], env_name("set")))
        set_sources.append(f"env {env_name('set')}")
    cli_set = getattr(args, "set", None) or []
    if cli_set:
        pairs = {}
        for item in cli_set:
            name, eq, value = item.partition("=")
            if not eq:
                raise ConfigError("--set", f"expected Directive=value, not {item!r}")
            pairs[name] = value
        merged.update(checked(OPTIONS["set"], pairs, "--set"))
        set_sources.append("cli")
    args.set = [f"{k}={v}" for k, v in merged.items()] or None
    sources["set"] = " < ".join(set_sources) or "default"
    args.config_sources = sources
    return args
