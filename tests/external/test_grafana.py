"""deploy/grafana: every PromQL expression of the dashboard (panels, annotations, template
variables, legends) refers only to metric names, labels and label values that a real dashboard's
/metrics exposes. The expressions are read by a small PromQL tokenizer (selectors, matchers,
grouping clauses, functions); the run is the real app with its embedded core, an open-model pattern
aimed at it and an attached server that never answers. No Grafana runs here (none is installed):
the provisioning files are parsed and checked to point at the dashboard and the datasource."""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict

import pytest
from conftest import ROOT, free_port, wait_for
from dashboard_fixtures import BASE, assert_core_gone, in_process_settings
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mpmlab.main import create_app

DASHBOARD = ROOT / "deploy/grafana/dashboards/mpmlab.json"
PROVISIONING = ROOT / "deploy/grafana/provisioning"
#: Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
#: Grafana's variables, as they expand in a query (values that are regexes or inside strings).
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "15m"}

FUNCTIONS = {"rate", "irate", "increase", "delta", "changes", "histogram_quantile", "max_over_time", "avg_over_time",
             "min_over_time", "sum_over_time", "label_replace", "time", "abs", "clamp_min", "vector", "resets"}
AGGREGATIONS = {"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "group", "stddev"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"offset", "bool", "and", "or", "unless"}

TOKEN = re.compile(r'\s*(?:(?P<str>"(?:\\.|[^"\\])*")|(?P<range>\[[^\]]*\])|(?P<dur>\d+(?:ms|[smhdwy])\b)'
                   r'|(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)'
                   r'|(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},]))')


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        assert m and m.end() > pos, f"cannot read PromQL at {expr[pos:pos + 30]!r} in {expr!r}"
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class Refs:
    """What one expression refers to."""

    def __init__(self) -> None:
        self.metrics: set[str] = set()
        self.matchers: list[tuple[str, str, str, str]] = []  # (metric, label, op, value)
        self.grouping: set[str] = set()


def refs(expr: str) -> Refs:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    toks = tokens(expr)
    r = Refs()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "ident" and text in GROUPING:
            assert nxt == ("op", "("), f"{text} without a label list in {expr!r}"
            j = i + 2
            while toks[j] != ("op", ")"):
                if toks[j][0] == "ident":
                    r.grouping.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "ident" and text in AGGREGATIONS and nxt[0] == "ident" and nxt[1] in GROUPING:
            pass  # sum by (...) (...)
        elif kind == "ident" and nxt == ("op", "("):
            assert text in FUNCTIONS | AGGREGATIONS, f"unknown function {text!r} in {expr!r}"
        elif kind == "ident" and text not in KEYWORDS:
            r.metrics.add(text)
            if nxt == ("op", "{"):
                j = i + 2
                while toks[j] != ("op", "}"):
                    if toks[j][0] == "ident":
                        label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2][1]
                        assert op in ("=", "!=", "=~", "!~") and value.startswith('"'), (expr, toks[j:j + 3])
                        r.matchers.append((text, label, op, json.loads(value)))
                        j += 3
                    else:
                        j += 1
                i = j
        i += 1
    return r


def _expressions(dash: dict) -> list[tuple[str, str, list[str]]]:
    """(where, PromQL, legend/title formats) of every query in the dashboard."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"], [t.get("legendFormat", "")]))
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"], [a.get("titleFormat", ""), a.get("textFormat", "")]))
    return out


def test_tokenizer_reads_what_the_dashboard_uses():
    r = refs('histogram_quantile(0.99, sum by (le, pattern) (rate(a_bucket{pattern=~"$pattern", x!="y"}[1m])))'
             ' unless max by (s) (b offset 30s) > 0')
    assert r.metrics == {"a_bucket", "b"} and r.grouping == {"le", "pattern", "s"}
    assert r.matchers == [("a_bucket", "pattern", "=~", "$pattern"), ("a_bucket", "x", "!=", "y")]
    with pytest.raises(AssertionError, match="unknown function"):
        refs("made_up(x)")


@pytest.fixture(scope="module")
def exposed() -> dict[str, dict[str, set[str]]]:
    """sample name -> label -> values, from a real dashboard's /metrics."""
    settings = in_process_settings(mpm="event", attach_interval=0.2,
                                   attach=[f"down=apache+http://127.0.0.1:{free_port()}/server-status"])
    app = create_app(settings)
    pids: list[int] = []
    try:
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            pids = [d.core.pid, d.traffic.pid]
            wait_for(lambda: d.sampler.summary is not None, timeout=15, what="the core's first summary")
            pids.append(client.get("/api/status").json()["core"]["pid"])
            r = client.post("/api/traffic", json={"pattern": "steady",
                                                  "params": {"model": "open", "rate": 40, "duration": 30}})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            try:
                def scraped():
                    text = client.get("/metrics").text
                    ready = ("mpmlab_traffic_corrected_request_duration_seconds_bucket{" in text
                             and 'mpmlab_source_scrape_failures_total{kind="apache",source="down"}' in text)
                    return text if ready else None

                text = wait_for(scraped, timeout=20, interval=0.25, what="traffic histograms and failed polls")
            finally:
                assert client.delete(f"/api/traffic/{rid}").status_code == 200
    finally:
        assert_core_gone(settings.core_listen, [p for p in pids if p])
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name]  # a sample without labels still names its series
            for k, v in s.labels.items():
                out[s.name][k].add(v)
    return out


def test_every_dashboard_query_uses_only_what_metrics_exposes(exposed):
    dash = json.loads(DASHBOARD.read_text())
    queries = _expressions(dash)
    assert len(queries) >= 12
    used: set[str] = set()
    for where, expr, formats in queries:
        r = refs(expr)
        assert r.metrics, f"{where}: no metric in {expr!r}"
        labels: set[str] = set(TARGET_LABELS)
        for m in r.metrics:
            assert m in exposed, f"{where}: {m} is not in /metrics"
            labels |= set(exposed[m])
        used |= r.metrics
        for metric, label, op, value in r.matchers:
            have = set(exposed[metric]) | TARGET_LABELS
            assert label in have, f"{where}: {metric} has no label {label!r} (it has {sorted(have)})"
            if op in ("=", "!=") and "$" not in value and label not in TARGET_LABELS:
                assert value in exposed[metric][label], f"{where}: {metric}{{{label}={value!r}}} never appears"
        assert r.grouping <= labels, f"{where}: grouping by {r.grouping - labels} that no metric here has"
        for fmt in formats:
            for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", fmt):
                assert name in labels, f"{where}: legend/title {{{{{name}}}}} is no label of {sorted(r.metrics)}"
    # the template variables
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"])
        assert m, var["query"]
        metric, label = m.groups()
        assert metric in exposed and (label in exposed[metric] or label in TARGET_LABELS), var["query"]
    # what the issue asks the dashboard to show is there
    for family in ("mpmlab_scoreboard_slots", "mpmlab_workers", "mpmlab_connections", "mpmlab_server_info",
                   "mpmlab_memory_pss_bytes", "mpmlab_traffic_request_duration_seconds_bucket"):
        assert family in used, family
    annotated = " ".join(a.get("expr", "") for a in dash["annotations"]["list"])
    assert "mpmlab_server_info" in annotated and "mpmlab_generation" in annotated


def test_dashboard_json_is_grafana_shaped():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "mpmlab" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}" and p["type"] in ("timeseries", "state-timeline")
    kinds = {v["name"]: v["type"] for v in dash["templating"]["list"]}
    assert kinds["datasource"] == "datasource" and {"source", "pattern", "job"} <= set(kinds)


def _yaml(path) -> dict:
    out = subprocess.run(["/usr/bin/python3", "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                         input=path.read_text(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_provisioning_points_at_the_dashboard_and_prometheus():
    ds = _yaml(PROVISIONING / "datasources/prometheus.yml")
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    current = {v["name"]: v.get("current", {}).get("value") for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert current["datasource"] == source["uid"]
    prov = _yaml(PROVISIONING / "dashboards/mpmlab.yml")
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
