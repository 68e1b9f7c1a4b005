"""avatar_runtime as a livekit-agents plugin, so `download-files` fetches our face models too.

livekit plugins register a `Plugin` when they are imported, and the CLI's `download-files`
command (`python agent.py download-files` with a worker that calls `cli.run_app`) runs each
registered plugin's `download_files()`. Importing avatar_runtime registers this one, whose
step is `python -m avatar_runtime download-files`: MediaPipe's face models into the cache
(renderers/vision/download.py). livekit-agents' module-level `python -m livekit.agents
download-files` imports only `livekit.plugins.*` packages: the installed package has one,
`livekit.plugins.avatar_agents` (avatar_agents/livekit_plugin), that imports this.
"""

from __future__ import annotations

import logging
import threading
from importlib import metadata

from livekit.agents import Plugin

logger = logging.getLogger("avatar_runtime")

DISTRIBUTION = "avatar-agents"


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a checkout
        return "0+checkout"


class AvatarRuntimePlugin(Plugin):
    def __init__(self) -> None:
        super().__init__("avatar_runtime", _version(), "avatar_runtime", logger)

    def download_files(self) -> None:
        from renderers.vision.download import download_models

        download_models(log=logger.info)


def register() -> None:
    """Register the plugin once. livekit-agents accepts registrations only on the main thread;
    an import elsewhere (a worker thread) leaves it unregistered rather than failing."""
    if any(isinstance(p, AvatarRuntimePlugin) for p in Plugin.registered_plugins):
        return
    if threading.current_thread() is not threading.main_thread():
        logger.debug("avatar_runtime imported off the main thread: plugin not registered")
        return
    Plugin.register_plugin(AvatarRuntimePlugin())


register()
