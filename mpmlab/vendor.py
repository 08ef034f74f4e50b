"""Copy the dashboard's front-end libraries from node_modules/ into static/vendor/.

``./dev.sh`` runs ``npm ci`` (exact versions from package-lock.json) and then
``python -m mpmlab.vendor``. Nothing under static/vendor/ is committed: the files always come from
the locked npm packages, and the page refers to them by the stable names below.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "static" / "vendor"

# package -> [(file inside the package, name under static/vendor)]
FILES: dict[str, list[tuple[str, str]]] = {
    "htmx.org": [("dist/htmx.min.js", "htmx.min.js")],
    "htmx-ext-ws": [("dist/ws.min.js", "htmx-ext-ws.min.js")],
    "uplot": [("dist/uPlot.iife.min.js", "uPlot.iife.min.js"), ("dist/uPlot.min.css", "uPlot.min.css")],
    # /docs (Swagger UI) from the locked package, not a CDN: the API's page works offline
    "swagger-ui-dist": [("swagger-ui-bundle.js", "swagger-ui-bundle.js"), ("swagger-ui.css", "swagger-ui.css"),
                        ("favicon-32x32.png", "swagger-favicon-32x32.png")],
}


def copy_vendor(node_modules: Path = NODE_MODULES, dest: Path = VENDOR) -> list[Path]:
    """Copy every file in FILES; raise FileNotFoundError naming what is missing."""
    missing = [f"{pkg}/{src}" for pkg, files in FILES.items() for src, _ in files
               if not (node_modules / pkg / src).is_file()]
    if missing:
        raise FileNotFoundError("missing in node_modules (run `npm ci`): " + ", ".join(missing))
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    versions = {}
    for pkg, files in FILES.items():
        versions[pkg] = json.loads((node_modules / pkg / "package.json").read_text())["version"]
        for src, name in files:
            target = dest / name
            shutil.copyfile(node_modules / pkg / src, target)
            out.append(target)
    (dest / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    return out


def main() -> int:
    try:
        files = copy_vendor()
    except FileNotFoundError as e:
        print(f"mpmlab.vendor: {e}", file=sys.stderr)
        return 1
    print(f"mpmlab.vendor: {len(files)} files in {VENDOR.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
