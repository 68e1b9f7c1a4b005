"""Where the project keeps what it downloads, prepares and stores outside the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`AVATAR_CACHE`, else `~/.cache/avatar-agents` (scripts/setup.sh uses the same)."""
    explicit = os.environ.get("AVATAR_CACHE")
    return Path(explicit).expanduser() if explicit else Path.home() / ".cache" / "avatar-agents"
