"""/openapi.json documents real schemas: every GET /api/* route answers a declared model (the
typed model's dataclasses or the schemas around them) and declares its errors. The app is built,
never started (no core, no runner)."""

from __future__ import annotations

from dashboard_fixtures import in_process_settings

from mpmlab.main import create_app

#: Passed through as the embedded server wrote it (text, HTML or JSON by the query).
PASSTHROUGH = {"/api/core/server-status"}


def test_every_get_route_has_a_response_schema() -> None:
    doc = create_app(in_process_settings(mpm="event")).openapi()
    gets = {p: v["get"] for p, v in doc["paths"].items() if p.startswith("/api") and "get" in v}
    assert len(gets) >= 15
    for path, op in gets.items():
        if path in PASSTHROUGH:
            continue
        if list(op["responses"]["200"]["content"]) == ["application/octet-stream"]:
            assert "frames" in path or "frame" in path, path  # the replay's binary grid frames, declared so
            continue
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema and schema != {}, path
    assert "/api/status" in gets and gets["/api/status"]["responses"]["503"]
    status = doc["components"]["schemas"]["StatusResponse"]
    assert status["properties"]["summary"] == {"$ref": "#/components/schemas/Summary"}
    summary = doc["components"]["schemas"]["Summary"]["properties"]
    assert {"busy", "idle", "graceful", "state_counts", "procs", "totals", "graceful_shown"} <= set(summary)
    assert "SlotDetail" in doc["components"]["schemas"] and "SourceFrame" in doc["components"]["schemas"]
