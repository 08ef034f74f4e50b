import json, sys
sys.path.insert(0, "tests/unit")
from pathlib import Path
from mpmcore.sources import attach
from mpmcore.sources.attach import SourceFrame, parse_auto, parse_status_html, _fill_apache, _fill_nginx, parse_stub_status
G = Path("tests/unit/data/status_golden"); OUT = Path("tests/unit/data/attach_golden")
for name in ("event_busy", "worker_off", "prefork_idle", "wide_old_gen"):
    auto = (G / f"{name}.auto.txt").read_text("latin-1")
    page = (G / f"{name}.html").read_text("latin-1")
    for html in (True, False):
        f = SourceFrame("a", "apache", "http://127.0.0.1:1/server-status", 1790000000.0)
        n, fields = parse_auto(auto)
        tables = parse_status_html(page) if html else {"procs": None, "workers": None}
        _fill_apache(f, n, fields, tables, None, None, html)
        d = f.to_dict()
        d["grid"] = attach.grid_frame(f, seq=7, now_ms=5.0).hex() if attach.grid_frame(f, 7, 5.0) else None
        d["message"] = attach.summary_message(f)
        d["point"] = attach.chart_point(f, (1789999999.0, 3))[0]
        (OUT / f"{name}{'' if html else '.nohtml'}.json").write_text(json.dumps(d, indent=1, sort_keys=True))
stub = "Active connections: 3 \nserver accepts handled requests\n 10 10 25 \nReading: 0 Writing: 1 Waiting: 2 \n"
f = SourceFrame("n", "nginx", "http://127.0.0.1:2/nginx_status", 1790000000.0)
_fill_nginx(f, parse_stub_status(stub), "nginx/1.24.0")
d = f.to_dict(); d["message"] = attach.summary_message(f); d["point"] = attach.chart_point(f, (1789999999.0, 20))[0]
(OUT / "nginx.json").write_text(json.dumps(d, indent=1, sort_keys=True))
(OUT / "nginx.stub.txt").write_text(stub)
