"""Experiment plans: the TOML schema (docs/experiments.md), its one-line errors naming file, key and
problem, the built-ins, and finding a plan by name or path."""

from __future__ import annotations

import pytest

from mpmcore.experiments.model import PlanError
from mpmcore.experiments.plan import builtin_names, builtin_plans, find_plan, load_plan, parse_plan

GOOD = """
name = "t"
title = "A test"
targets = ["core:event", "nginx", "attach:http://127.0.0.1:8080/server-status"]
warmup = "500ms"
rounds = 2
thresholds = "errors>1%, p99>200ms"
claim = "some-claim"
[budget]
slots = 32
processes = 4
keepalive_timeout = "2s"
request_read_timeout = "header=10 body=10"
[directives]
MaxConnectionsPerChild = 1000
[[stage]]
name = "browsers"
duration = "10s"
  [[stage.pattern]]
  pattern = "browsers"
  clients = 50
  think_time = "1s"
  [[stage.pattern]]
  pattern = "ajax"
  label = "poll"
  interval = "250ms"
[[stage]]
name = "loris"
duration = 3
  [[stage.pattern]]
  pattern = "slowloris"
  connections = 10
"""


def test_a_full_plan_parses_into_the_typed_model():
    p = parse_plan(GOOD, "t.toml")
    assert (p.name, p.title, p.rounds, p.warmup, p.claim) == ("t", "A test", 2, 0.5, "some-claim")
    assert [t.name for t in p.targets] == ["core:event", "nginx", "attach:http://127.0.0.1:8080/server-status"]
    assert (p.budget.slots, p.budget.processes, p.budget.keepalive_timeout) == (32, 4, 2.0)
    assert p.budget.request_read_timeout == "header=10 body=10"
    assert p.server_directives == {"MaxConnectionsPerChild": "1000"}
    assert [(s.name, s.duration) for s in p.stages] == [("browsers", 10.0), ("loris", 3.0)]
    browsers, poll = p.stages[0].mix
    assert (browsers.name, browsers.params) == ("browsers", {"clients": 50, "think_time": 1.0})
    assert (poll.name, poll.pattern, poll.params) == ("poll", "ajax", {"interval": 0.25})
    assert p.duration == 13.5
    assert p.source == GOOD


@pytest.mark.parametrize("change, message", [
    (("clients = 50", "clients = -3"), "t.toml: stage[0].pattern[0].clients: must be between 1 and"),
    (("clients = 50", "clientz = 5"), "t.toml: stage[0].pattern[0].clientz: unknown parameter of browsers"),
    (("think_time = \"1s\"", "target = \"http://x/\""), "t.toml: stage[0].pattern[0].target: set by the runner"),
    (("pattern = \"slowloris\"", "pattern = \"slowlorris\""), "t.toml: stage[1].pattern[0].pattern: unknown pattern"),
    (("label = \"poll\"", "label = \"browsers\""), "t.toml: stage[0].pattern[1]: label 'browsers' is already used"),
    (("duration = 3", "duration = \"3 parsecs\""), "t.toml: stage[1].duration: not a duration"),
    (("duration = 3", "duration = 0"), "t.toml: stage[1].duration: must be between"),
    (("rounds = 2", "rounds = 0"), "t.toml: rounds: must be between 1 and 20"),
    (("warmup = \"500ms\"", "warmup = true"), "t.toml: warmup: not a duration"),
    (("thresholds = \"errors>1%, p99>200ms\"", "thresholds = \"p42>1\""), "t.toml: thresholds: unknown metric"),
    (("\"nginx\",", "\"apache:turbo\","), "t.toml: targets[1]: 'apache:turbo': apache needs an MPM"),
    (("\"nginx\",", "\"core:event\","), "t.toml: targets[1]: core:event is listed twice"),
    (("processes = 4", "processes = 3"), "t.toml: budget.slots: must be a multiple of budget.processes (3)"),
    (("slots = 32", "slots = 0"), "t.toml: budget.slots: must be between 1 and 4096"),
    (("keepalive_timeout = \"2s\"", "keepalive = 2"), "t.toml: budget.keepalive: unknown key"),
    (("request_read_timeout = \"header=10 body=10\"", "request_read_timeout = \"head=10\""),
     "t.toml: budget.request_read_timeout: RequestReadTimeout"),
    (("MaxConnectionsPerChild = 1000", "MaxBananas = 1"), "t.toml: directives.MaxBananas: "),
    (("title = \"A test\"", "titel = \"A test\""), "t.toml: titel: unknown key"),
    (("name = \"t\"", "name = \"a b\""), "t.toml: name: must be 1-60 letters"),
    (("connections = 10", "connections = 60000"), "t.toml: stage[1].pattern[0].connections: must be between"),
])
def test_a_bad_plan_is_one_line_naming_file_key_and_problem(change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(PlanError) as e:
        parse_plan(GOOD.replace(old, new, 1), "t.toml")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_structure_errors():
    with pytest.raises(PlanError, match=r"^x.toml: not valid TOML"):
        parse_plan("name = ", "x.toml")
    with pytest.raises(PlanError, match=r"^x.toml: stage: a plan needs at least one \[\[stage\]\]"):
        parse_plan('name = "x"', "x.toml")
    with pytest.raises(PlanError, match=r"^x.toml: stage\[0\].pattern: a stage needs at least one"):
        parse_plan('[[stage]]\nduration = "1s"\n', "x.toml", default_name="x")
    with pytest.raises(PlanError, match=r"^x.toml: stage\[0\].duration: required"):
        parse_plan('[[stage]]\n[[stage.pattern]]\npattern = "ajax"\n', "x.toml", default_name="x")


def test_the_generator_cap_is_checked_per_stage():
    text = ('name = "big"\n[[stage]]\nduration = "1s"\n[[stage.pattern]]\npattern = "slowloris"\n'
            'connections = 15000\n[[stage.pattern]]\npattern = "ajax"\nclients = 15000\n')
    with pytest.raises(PlanError, match=r"^big.toml: stage\[0\]: its patterns open up to 30000 connections"):
        parse_plan(text, "big.toml")
    fast = ('name = "fast"\n[[stage]]\nduration = "1s"\n' + '[[stage.pattern]]\npattern = "steady"\nmodel = "open"\n'
            'rate = 30000\nlabel = "a"\n' + '[[stage.pattern]]\npattern = "steady"\nmodel = "open"\nrate = 30000\n')
    with pytest.raises(PlanError, match=r"^fast.toml: stage\[0\]: its patterns ask for 60000 requests/s"):
        parse_plan(fast, "fast.toml")


def test_every_builtin_parses_and_names_are_unique():
    plans = builtin_plans()
    names = [p.name for p in plans]
    assert {"browsers", "slowloris", "one-at-a-time", "mixed"} <= set(names)
    assert sorted(names) == sorted(set(names)) == sorted(builtin_names())
    for p in plans:
        assert p.stages and p.targets and p.source
        assert p.name == find_plan(p.name).name


def test_find_plan_by_path_user_dir_and_builtin(tmp_path):
    mine = tmp_path / "plans"
    mine.mkdir()
    (mine / "browsers.toml").write_text(GOOD.replace('name = "t"', 'name = "my-browsers"'))
    assert find_plan("browsers", mine).name == "my-browsers"  # the user's own shadows the built-in
    assert find_plan("browsers", tmp_path / "none").name == "browsers"
    f = tmp_path / "exp.toml"
    f.write_text(GOOD.replace('name = "t"\n', ""))
    p = load_plan(f)
    assert (p.name, p.path) == ("exp", str(f))  # the file's stem names it
    assert find_plan(str(f)).name == "exp"
    with pytest.raises(PlanError, match=r"no-such-plan: no such plan file, and no plan of that name"):
        find_plan("no-such-plan", mine)
    with pytest.raises(PlanError, match=r"missing.toml: No such file"):
        find_plan(str(tmp_path / "missing.toml"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PlanError, match=r"^bin.toml: not a text file"):
        load_plan(tmp_path / "bin.toml")


def test_a_budget_the_core_cannot_take_is_refused_with_its_message():
    text = GOOD.replace("slots = 32", "slots = 4096").replace("processes = 4", "processes = 2")
    with pytest.raises(PlanError, match=r"^t.toml: budget: core:event cannot take this budget: ThreadLimit: 2048"):
        parse_plan(text, "t.toml")
    with pytest.raises(PlanError, match=r"^t.toml: budget: core:event cannot take this budget: "
                                        r"MaxConnectionsPerChild: -1"):
        parse_plan(GOOD.replace("MaxConnectionsPerChild = 1000", "MaxConnectionsPerChild = -1"), "t.toml")


def test_the_documented_plan_parses():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    p = parse_plan(example, "experiments.md")
    assert p.name == "browsers-vs-mpm" and p.rounds == 2 and p.server_directives
    assert [u.name for u in p.stages[0].mix] == ["browsers", "poll"]
