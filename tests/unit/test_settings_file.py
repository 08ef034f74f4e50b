"""Configuration by TOML file and environment variables, with the CLI flags' names.
Precedence per option: command line > environment > file > default."""

from __future__ import annotations

import pytest

from mpmcore.cli import build_parser
from mpmlab.config_file import OPTIONS, ConfigError, apply_defaults, env_name, given_options


def _dashboard(argv: list[str]):
    args = build_parser().parse_args(["dashboard", *argv])
    return args, given_options(args)


def _write(tmp_path, text: str):
    p = tmp_path / "mpmlab.toml"
    p.write_text(text)
    return p


def test_every_dashboard_flag_has_an_env_name_and_a_file_key():
    args, _ = _dashboard([])
    cli = {k for k in vars(args) if k not in ("command", "func")}
    assert cli <= set(OPTIONS), cli - set(OPTIONS)
    assert env_name("core_listen") == "MPMLAB_CORE_LISTEN" and env_name("attach") == "MPMLAB_ATTACH"
    for dest in cli:  # nothing given: every flag is None until apply_defaults fills it from OPTIONS
        assert getattr(args, dest) is None, dest
    apply_defaults(args, env={}, given=set())
    for dest in cli:
        assert getattr(args, dest) == OPTIONS[dest].default, dest


def test_precedence_cli_env_file_default(tmp_path):
    path = _write(tmp_path, """
host = "0.0.0.0"
port = 8001
mpm = "worker"
core_listen = "127.0.0.1:9090"
token = "file-token-123"
attach = ["apache=http://127.0.0.1:8081/server-status",
          { url = "http://127.0.0.1:8082/nginx_status", name = "web", kind = "nginx" },
          { url = "http://127.0.0.1:8083/server-status", threads_per_child = 16 }]
attach_interval = 0.5
[directives]
MaxRequestWorkers = 64
keepalivetimeout = 7
KeepAlive = true
""")
    env = {"MPMLAB_PORT": "8002", "MPMLAB_MPM": "prefork", "MPMLAB_SET": "KeepAliveTimeout=9,StartServers=2",
           "MPMLAB_ATTACH": "", "MPMLAB_TOKEN": ""}
    args, given = _dashboard(["--port", "8003", "--set", "StartServers=3"])
    apply_defaults(args, env=env, path=path, given=given)
    assert args.port == 8003 and args.config_sources["port"] == "cli"
    assert args.mpm == "prefork" and args.config_sources["mpm"] == "env MPMLAB_MPM"
    assert args.host == "0.0.0.0" and args.config_sources["host"] == f"file {path}"
    assert args.core_listen == "127.0.0.1:9090"
    assert args.token == "file-token-123"  # an empty variable does not count
    assert args.fps == 20 and args.config_sources["fps"] == "default"
    assert args.attach_interval == 0.5 and args.allow_remote_attach is False and args.no_core is False
    assert args.attach == ["apache=http://127.0.0.1:8081/server-status", "web=nginx+http://127.0.0.1:8082/nginx_status",
                           "http://127.0.0.1:8083/server-status#threads_per_child=16"]
    # directives merge per name: file < env < CLI, with Apache's spelling
    assert dict(s.split("=", 1) for s in args.set) == {
        "MaxRequestWorkers": "64", "KeepAliveTimeout": "9", "KeepAlive": "On", "StartServers": "3"}
    from mpmcore.sources.attach import make_source
    assert [make_source(s).name for s in args.attach] == ["apache", "web", "127.0.0.1:8083"]


def test_env_alone_and_config_file_from_env(tmp_path):
    path = _write(tmp_path, 'port = 8100\n')
    args, given = _dashboard([])
    apply_defaults(args, env={"MPMLAB_CONFIG_FILE": str(path), "MPMLAB_NO_CORE": "yes",
                              "MPMLAB_ALLOW_REMOTE_ATTACH": "1", "MPMLAB_FPS": "10",
                              "MPMLAB_ATTACH": "a=http://127.0.0.1:1/server-status, nginx+http://127.0.0.1:2/s",
                              "MPMLAB_SET": "RequestReadTimeout=header=20-40,MinRate=500;MaxRequestWorkers=10"},
                   given=given)
    assert args.port == 8100 and args.no_core is True and args.allow_remote_attach is True and args.fps == 10.0
    assert args.attach == ["a=http://127.0.0.1:1/server-status", "nginx+http://127.0.0.1:2/s"]
    assert args.set == ["RequestReadTimeout=header=20-40,MinRate=500", "MaxRequestWorkers=10"]


@pytest.mark.parametrize("env, where, what", [
    ({"MPMLAB_PORT": "eighty"}, "MPMLAB_PORT", "between 1 and 65535"),
    ({"MPMLAB_PORT": "0"}, "MPMLAB_PORT", "between 1 and 65535"),
    ({"MPMLAB_MPM": "evnt"}, "MPMLAB_MPM", "prefork, worker, event"),
    ({"MPMLAB_CORE_LISTEN": "8080"}, "MPMLAB_CORE_LISTEN", "HOST:PORT"),
    ({"MPMLAB_NO_CORE": "perhaps"}, "MPMLAB_NO_CORE", "true or false"),
    ({"MPMLAB_FPS": "100"}, "MPMLAB_FPS", "between 1 and 30"),
    ({"MPMLAB_TOKEN": "short"}, "MPMLAB_TOKEN", "at least 8"),
    ({"MPMLAB_ATTACH": "ftp://127.0.0.1/x"}, "MPMLAB_ATTACH", "scheme"),
    ({"MPMLAB_ATTACH": "http://127.0.0.1/x#threads=4"}, "MPMLAB_ATTACH", "unknown option"),
    ({"MPMLAB_SET": "MaxWorkers=10"}, "MPMLAB_SET", "unknown directive"),
    ({"MPMLAB_SET": "MaxRequestWorkers"}, "MPMLAB_SET", "Directive=value"),
    ({"MPMLAB_ATTACH_INTERVAL": "0"}, "MPMLAB_ATTACH_INTERVAL", "between 0.1 and 60"),
])
def test_bad_env_values_name_the_variable(env, where, what):
    args, given = _dashboard([])
    with pytest.raises(ConfigError) as e:
        apply_defaults(args, env=env, given=given)
    assert e.value.key == where and what in str(e.value)


@pytest.mark.parametrize("text, key, what", [
    ("prot = 8000\n", "prot", "unknown key"),
    ("set = ['A=1']\n", "set", "[directives]"),
    ("port = 8000.5\n", "port", "between 1 and 65535"),
    ("port = true\n", "port", "between 1 and 65535"),
    ("no_core = 'maybe'\n", "no_core", "true or false"),
    ("attach = ['ftp://x']\n", "attach", "scheme"),
    ("attach = [{ name = 'x' }]\n", "attach", "url is required"),
    ("attach = [{ url = 'http://127.0.0.1/', kind = 'iis' }]\n", "attach", "apache, nginx, lighttpd or locust"),
    ("attach = [{ url = 'http://127.0.0.1/', color = 'red' }]\n", "attach", "unknown key"),
    ("[directives]\nBogus = 1\n", "directives", "unknown directive"),
    ("[directives]\nMaxRequestWorkers = [1, 2]\n", "directives", "single value"),
    ("port = \n", None, "not valid TOML"),
])
def test_bad_file_values_name_the_key(tmp_path, text, key, what):
    path = _write(tmp_path, text)
    args, given = _dashboard([])
    with pytest.raises(ConfigError) as e:
        apply_defaults(args, env={}, path=path, given=given)
    assert str(path) in str(e.value) and what in str(e.value)
    if key:
        assert e.value.key == f"{path}: {key}"


def test_missing_file_and_bad_cli_attach(tmp_path):
    args, given = _dashboard([])
    with pytest.raises(ConfigError, match="not found"):
        apply_defaults(args, env={}, path=tmp_path / "nope.toml", given=given)
    args, given = _dashboard(["--attach", "gopher://127.0.0.1/"])
    with pytest.raises(ConfigError) as e:
        apply_defaults(args, env={}, given=given)
    assert e.value.key == "--attach"


@pytest.mark.parametrize("argv,key,what", [
    (["--fps", "500"], "--fps", "between 1 and 30"), (["--port", "0"], "--port", "between 1 and 65535"),
    (["--attach-interval", "0.01"], "--attach-interval", "between 0.1 and 60")])
def test_bad_cli_values_are_checked_like_env_and_file(argv, key, what):
    """The command line gets the same range checks as MPMLAB_* and the file (it once got them only
    for --attach, so `--fps 500` reached the sampler)."""
    args, given = _dashboard(argv)
    with pytest.raises(ConfigError) as e:
        apply_defaults(args, env={}, given=given)
    assert e.value.key == key and what in str(e.value)


def test_without_given_a_non_default_value_counts_as_cli():
    args, _ = _dashboard(["--port", "9001"])
    apply_defaults(args, env={"MPMLAB_PORT": "9002", "MPMLAB_HOST": "127.0.0.2"})
    assert args.port == 9001 and args.host == "127.0.0.2"
