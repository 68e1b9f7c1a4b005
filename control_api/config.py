"""Settings for the control API, read from the environment plus an optional `.env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_LIVEKIT_URL = "ws://127.0.0.1:7880"
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "avatar-agents-local-dev-secret-0123456789"
DEFAULT_AGENT_NAME = "avatar-agent"


@dataclass(frozen=True)
class Settings:
    livekit_url: str = DEFAULT_LIVEKIT_URL
    # What browsers are told to connect to; differs from livekit_url behind a proxy/NAT.
    public_livekit_url: str = DEFAULT_LIVEKIT_URL
    livekit_api_key: str = DEFAULT_API_KEY
    livekit_api_secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    agent_name: str = DEFAULT_AGENT_NAME
    token_ttl: timedelta = timedelta(hours=1)
    client_dir: Path = REPO_ROOT / "client_demo"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ, after loading the repo's `.env`)."""
        if env is None:
            # override=False: variables already set in the shell win over the file.
            load_dotenv(REPO_ROOT / ".env", override=False)
            env = os.environ

        def get(name: str, default: str) -> str:
            # Treat empty values like unset ones so `FOO=` in .env does not blank a setting.
            return env.get(name) or default

        livekit_url = get("LIVEKIT_URL", DEFAULT_LIVEKIT_URL)
        return cls(
            livekit_url=livekit_url,
            public_livekit_url=get("LIVEKIT_PUBLIC_URL", livekit_url),
            livekit_api_key=get("LIVEKIT_API_KEY", DEFAULT_API_KEY),
            livekit_api_secret=get("LIVEKIT_API_SECRET", DEFAULT_API_SECRET),
            agent_name=get("AVATAR_AGENT_NAME", DEFAULT_AGENT_NAME),
        )

    @property
    def livekit_http_url(self) -> str:
        """The LiveKit URL with ws(s) swapped for http(s), for plain HTTP probes."""
        url = self.livekit_url
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if url.startswith(ws):
                return http + url[len(ws) :]
        return url
