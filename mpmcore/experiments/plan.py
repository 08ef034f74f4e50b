"""Experiment plans: TOML files into ``model.Plan``, the packaged built-ins, and finding a plan by
name or path.

The schema is docs/experiments.md's. Every problem is a ``PlanError`` whose one-line message names
the file, the key and what is wrong, e.g. ``browsers.toml: stage[1].pattern[0].clients: must be
between 1 and 50000 browsers, got -3``. Pattern parameters are checked by the traffic catalogue
(``catalogue.validate_params``) as they will be started: the runner adds ``target`` (each
target's URL), ``duration`` (the stage's) and ``label`` (the pattern's name in the figures).
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mpmcore.experiments.model import Budget, PatternUse, Plan, PlanError, Stage, TargetSpec
from mpmcore.experiments.targets import TargetError, check_budget, parse_target
from mpmcore.traffic.catalogue import PATTERNS, declared_connections, declared_rate, parse_duration, validate_params
from mpmcore.traffic.limits import MAX_CONNECTIONS, MAX_PATTERNS, MAX_RATE
from mpmcore.traffic.thresholds import ThresholdError, parse_thresholds

__all__ = ["MAX_ROUNDS", "MAX_SLOTS", "PlanError", "builtin_names", "builtin_plans", "default_plans_dir",
           "find_plan", "load_plan", "parse_plan", "user_plans"]

MAX_ROUNDS = 20
MAX_SLOTS = 4096
MAX_STAGE_SECONDS = 3600.0
#: the parameters the runner sets for every pattern; a plan may not
RUNNER_PARAMS = ("target", "duration", "label", "allow_remote")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,60}$")
_LABEL = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
_TOP_KEYS = {"name", "title", "description", "targets", "warmup", "rounds", "thresholds", "claim", "budget",
             "stage", "directives"}
_BUDGET_KEYS = {"slots", "processes", "keepalive_timeout", "max_keepalive_requests", "request_read_timeout",
                "timeout", "tls"}
_STAGE_KEYS = {"name", "duration", "pattern"}
DEFAULT_TARGETS = ("core:prefork", "core:worker", "core:event")


def default_plans_dir() -> Path:
    """The user's own plans: ``$XDG_CONFIG_HOME/mpmlab/experiments`` (~/.config/mpmlab/experiments)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mpmlab" / "experiments"


class _Where:
    """Builds ``file: key: problem`` messages."""

    def __init__(self, fname: str) -> None:
        self.fname = fname

    def err(self, key: str, problem: str) -> PlanError:
        return PlanError(f"{self.fname}: {key}: {problem}" if key else f"{self.fname}: {problem}")


def _duration(w: _Where, key: str, value: object, low: float, high: float) -> float:
    try:
        d = parse_duration(value)
    except ValueError as e:
        raise w.err(key, str(e)) from None
    if not low <= d <= high:
        raise w.err(key, f"must be between {low:g} s and {high:g} s, got {value!r}")
    return d


def _int(w: _Where, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise w.err(key, f"must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise w.err(key, f"must be between {low} and {high}, got {value}")
    return value


def _str(w: _Where, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise w.err(key, f"must be a string, got {value!r}")
    return value


def _unknown(w: _Where, where: str, table: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        prefix = f"{where}." if where else ""
        raise w.err(prefix + extra[0], f"unknown key (known: {', '.join(sorted(known))})")


def _budget(w: _Where, raw: object) -> Budget:
    if not isinstance(raw, dict):
        raise w.err("budget", "must be a table ([budget])")
    _unknown(w, "budget", raw, _BUDGET_KEYS)
    d = Budget()
    slots = _int(w, "budget.slots", raw.get("slots", d.slots), 1, MAX_SLOTS)
    processes = _int(w, "budget.processes", raw.get("processes", d.processes), 1, 64)
    if processes > slots:
        raise w.err("budget.processes", f"must be at most budget.slots ({slots}), got {processes}")
    if slots % processes:
        raise w.err("budget.slots", f"must be a multiple of budget.processes ({processes}): worker and event "
                                    f"run slots/processes threads per child, got {slots}")
    rrt = _str(w, "budget.request_read_timeout", raw.get("request_read_timeout", d.request_read_timeout))
    from mpmcore.http.protocol import RequestReadTimeout

    try:
        RequestReadTimeout.parse(rrt)
    except ValueError as e:
        raise w.err("budget.request_read_timeout", str(e)) from None
    tls = raw.get("tls", d.tls)
    if not isinstance(tls, bool):
        raise w.err("budget.tls", f"must be true or false, got {tls!r}")
    timeout = _duration(w, "budget.timeout", raw.get("timeout", d.timeout), 1, 3600)
    if timeout != int(timeout):
        raise w.err("budget.timeout", f"must be whole seconds (Apache's Timeout), got {raw.get('timeout')!r}")
    return Budget(
        slots=slots, processes=processes,
        keepalive_timeout=_duration(w, "budget.keepalive_timeout", raw.get("keepalive_timeout", d.keepalive_timeout),
                                    0.001, 3600),
        max_keepalive_requests=_int(w, "budget.max_keepalive_requests",
                                    raw.get("max_keepalive_requests", d.max_keepalive_requests), 0, 2**31 - 1),
        request_read_timeout=rrt, timeout=timeout, tls=tls)


def _pattern(w: _Where, key: str, raw: object, stage_duration: float) -> PatternUse:
    if not isinstance(raw, dict):
        raise w.err(key, "must be a table ([[stage.pattern]])")
    name = raw.get("pattern")
    if not isinstance(name, str) or not name:
        raise w.err(f"{key}.pattern", f"required: one of {', '.join(PATTERNS)}")
    if name not in PATTERNS:
        raise w.err(f"{key}.pattern", f"unknown pattern {name!r} (known: {', '.join(PATTERNS)})")
    label = raw.get("label", "")
    if label != "" and (not isinstance(label, str) or not _LABEL.match(label)):
        raise w.err(f"{key}.label", f"must be 1-40 letters, digits, '.', '_' or '-', got {label!r}")
    params = {k: v for k, v in raw.items() if k not in ("pattern", "label")}
    for k in params:
        if k in RUNNER_PARAMS:
            raise w.err(f"{key}.{k}", "set by the runner (the target's URL, the stage's duration, the label); "
                                      "remove it from the plan")
        if k not in PATTERNS[name].params:
            raise w.err(f"{key}.{k}", f"unknown parameter of {name} (known: "
                                      f"{', '.join(p for p in PATTERNS[name].params if p not in RUNNER_PARAMS)})")
    checked: dict[str, Any] = {}
    for k, v in params.items():  # one at a time, so that the message names the key
        try:
            checked[k] = validate_params(name, {k: v, "target": "http://127.0.0.1:1/",
                                                "duration": stage_duration})[k]
        except ValueError as e:
            msg = str(e)
            prefix = f"{name}: parameter {k!r} "
            raise w.err(f"{key}.{k}", msg[len(prefix):] if msg.startswith(prefix) else msg) from None
    return PatternUse(pattern=name, params=checked, label=label)


def _stage(w: _Where, i: int, raw: object) -> Stage:
    key = f"stage[{i}]"
    if not isinstance(raw, dict):
        raise w.err(key, "must be a table ([[stage]])")
    _unknown(w, key, raw, _STAGE_KEYS)
    name = _str(w, f"{key}.name", raw.get("name", f"stage{i + 1}"))
    if "duration" not in raw:
        raise w.err(f"{key}.duration", "required (e.g. \"10s\")")
    duration = _duration(w, f"{key}.duration", raw["duration"], 0.1, MAX_STAGE_SECONDS)
    pats = raw.get("pattern", [])
    if not isinstance(pats, list) or not pats:
        raise w.err(f"{key}.pattern", "a stage needs at least one [[stage.pattern]]")
    mix = tuple(_pattern(w, f"{key}.pattern[{j}]", p, duration) for j, p in enumerate(pats))
    conns = 0
    rate = 0.0
    for use in mix:
        full = validate_params(use.pattern, {**use.params, "target": "http://127.0.0.1:1/", "duration": duration})
        conns += declared_connections(use.pattern, full)
        rate += declared_rate(use.pattern, full)
    if conns > MAX_CONNECTIONS:
        raise w.err(key, f"its patterns open up to {conns} connections, more than the generator's "
                         f"MAX_CONNECTIONS={MAX_CONNECTIONS}")
    if rate > MAX_RATE:
        raise w.err(key, f"its patterns ask for {rate:g} requests/s, more than the generator's MAX_RATE={MAX_RATE}")
    if len(mix) > MAX_PATTERNS:
        raise w.err(key, f"{len(mix)} patterns, more than the generator runs at once (MAX_PATTERNS={MAX_PATTERNS})")
    return Stage(name=name, duration=duration, mix=mix)


def parse_plan(text: str, fname: str = "<plan>", default_name: str | None = None,
               path: str | None = None) -> Plan:
    """A plan from its TOML text; ``fname`` is what messages call the file."""
    w = _Where(fname)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise w.err("", f"not valid TOML: {e}") from None
    _unknown(w, "", raw, _TOP_KEYS)
    name = _str(w, "name", raw.get("name", default_name or ""))
    if not _NAME.match(name):
        raise w.err("name", f"must be 1-60 letters, digits, '.', '_' or '-', got {name!r}")
    title = _str(w, "title", raw.get("title", name))
    description = _str(w, "description", raw.get("description", ""))
    raw_targets = raw.get("targets", list(DEFAULT_TARGETS))
    if not isinstance(raw_targets, list) or not raw_targets:
        raise w.err("targets", "must be a non-empty list of targets, e.g. [\"core:event\", \"nginx\"]")
    targets: list[TargetSpec] = []
    for i, t in enumerate(raw_targets):
        try:
            spec = parse_target(_str(w, f"targets[{i}]", t))
        except TargetError as e:
            raise w.err(f"targets[{i}]", str(e)) from None
        if spec.name in {s.name for s in targets}:
            raise w.err(f"targets[{i}]", f"{spec.name} is listed twice")
        targets.append(spec)
    warmup = _duration(w, "warmup", raw.get("warmup", 0), 0, 600)
    rounds = _int(w, "rounds", raw.get("rounds", 1), 1, MAX_ROUNDS)
    thresholds = _str(w, "thresholds", raw.get("thresholds", ""))
    if thresholds.strip():
        try:
            parse_thresholds(thresholds)
        except ThresholdError as e:
            raise w.err("thresholds", str(e)) from None
    claim = raw.get("claim")
    if claim is not None:
        claim = _str(w, "claim", claim)
    budget = _budget(w, raw.get("budget", {}))
    directives = raw.get("directives", {})
    if not isinstance(directives, dict):
        raise w.err("directives", "must be a table ([directives] Name = value)")
    server_directives: dict[str, str] = {}
    for k, v in directives.items():
        if isinstance(v, bool):
            v = "On" if v else "Off"
        if not isinstance(v, (str, int, float)):
            raise w.err(f"directives.{k}", f"must be a string or a number, got {v!r}")
        server_directives[k] = str(v)
    if server_directives:
        from mpmcore.directives import DirectiveError, canonical

        for k in server_directives:
            try:
                canonical(k)
            except DirectiveError as e:
                raise w.err(f"directives.{k}", str(e)) from None
    for spec in targets:
        problem = check_budget(spec, budget, server_directives)
        if problem:
            raise w.err("budget", problem)
    stages_raw = raw.get("stage")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise w.err("stage", "a plan needs at least one [[stage]]")
    stages = tuple(_stage(w, i, s) for i, s in enumerate(stages_raw))
    seen: dict[str, str] = {}
    for i, st in enumerate(stages):
        for j, use in enumerate(st.mix):
            if use.name in seen:
                raise w.err(f"stage[{i}].pattern[{j}]", f"label {use.name!r} is already used by {seen[use.name]}: "
                                                        "give each pattern of a plan its own label")
            seen[use.name] = f"stage[{i}]"
    if len({s.name for s in stages}) != len(stages):
        raise w.err("stage", "stage names must be different from each other")
    return Plan(name=name, title=title, description=description, stages=stages, targets=tuple(targets),
                budget=budget, warmup=warmup, rounds=rounds, thresholds=thresholds, claim=claim,
                server_directives=server_directives, source=text, path=path)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan from a TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PlanError(f"{p.name}: not a text file (UTF-8 expected)") from None
    except OSError as e:
        raise PlanError(f"{p}: {e.strerror or e}") from None
    return parse_plan(text, p.name, default_name=p.stem, path=str(p))


def _builtin_files() -> dict[str, str]:
    """Packaged plan name -> its TOML text."""
    out: dict[str, str] = {}
    root = resources.files("mpmcore.experiments") / "builtin"
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            out[entry.name[:-5]] = entry.read_text(encoding="utf-8")
    return out


def builtin_names() -> list[str]:
    return list(_builtin_files())


def builtin_plans() -> list[Plan]:
    """Every packaged plan (a broken one raises: the tests check them all)."""
    return [parse_plan(text, f"{name}.toml (built-in)", default_name=name) for name, text in _builtin_files().items()]


def user_plans(plans_dir: str | os.PathLike[str] | None = None) -> list[Plan | PlanError]:
    """The plans in the user's directory; a broken file is listed as its PlanError."""
    d = Path(plans_dir) if plans_dir is not None else default_plans_dir()
    if not d.is_dir():
        return []
    out: list[Plan | PlanError] = []
    for f in sorted(d.glob("*.toml")):
        try:
            out.append(load_plan(f))
        except PlanError as e:
            out.append(e)
    return out


def find_plan(name_or_path: str, plans_dir: str | os.PathLike[str] | None = None) -> Plan:
    """A file path (anything with a / or ending in .toml that exists), else a plan of the user's
    directory by name, else a built-in by name."""
    p = Path(name_or_path)
    if os.sep in name_or_path or (p.suffix == ".toml" and p.exists()):
        return load_plan(p)
    d = Path(plans_dir) if plans_dir is not None else default_plans_dir()
    mine = d / f"{name_or_path}.toml"
    if mine.is_file():
        return load_plan(mine)
    files = _builtin_files()
    if name_or_path in files:
        return parse_plan(files[name_or_path], f"{name_or_path}.toml (built-in)", default_name=name_or_path)
    if p.exists():
        return load_plan(p)
    raise PlanError(f"{name_or_path}: no such plan file, and no plan of that name in {d} or among the "
                    f"built-ins ({', '.join(files)})")
