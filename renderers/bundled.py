"""Files that ship inside the `renderers` package (package data, `renderers/assets/`).

Found next to this module, so they are there alike in a checkout and in an installed wheel
(pyproject.toml lists `assets/**/*` as package data). The lowest layer holds them because both
meshwarp (its default portrait) and avatar_runtime (the avatar catalog's bundled ids) use them.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
PORTRAITS_DIR = ASSETS_DIR / "portraits"
"""Bundled portraits: `<id>.jpg|png|webp`, each an avatar id of the catalog."""
DEFAULT_PORTRAIT = PORTRAITS_DIR / "astronaut.jpg"
"""The public-domain portrait meshwarp animates when no source is given."""
