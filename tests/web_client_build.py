"""The web page built into control_api/web/ (client_demo/scripts/build.mjs), for the tests that
serve it: built here when it is missing or older than its sources, as scripts/setup.sh does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.livekit_server import require_or_skip

REPO = Path(__file__).resolve().parent.parent
CLIENT = REPO / "client_demo"
WEB = REPO / "control_api" / "web"
"""What the control API serves (control_api.config.CLIENT_DIR) and the wheel carries."""
BUNDLE = WEB / "dist" / "app.js"


def _sources() -> list[Path]:
    fixed = ["package.json", "package-lock.json", "index.html", "style.css", "scripts/build.mjs"]
    return [*(CLIENT / name for name in fixed), *CLIENT.glob("src/**/*")]


def ensure_web_client_built() -> Path:
    """control_api/web/, rebuilt first when stale; skips (fails under CI) when it cannot be."""
    if BUNDLE.is_file():
        built = BUNDLE.stat().st_mtime
        if all(p.stat().st_mtime <= built for p in _sources() if p.is_file()):
            return WEB
    npm = shutil.which("npm")
    if npm is None:
        require_or_skip("control_api/web is missing or stale and npm is not installed")
    if not (CLIENT / "node_modules" / "esbuild").is_dir():
        require_or_skip("client_demo's node packages are missing: run `make setup`")
    subprocess.run([npm, "run", "--silent", "build"], cwd=CLIENT, check=True, timeout=120)
    return WEB
