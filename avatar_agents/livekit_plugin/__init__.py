"""Installed as `livekit.plugins.avatar_agents`: LiveKit's own `python -m livekit.agents
download-files` imports every `livekit.plugins.*` package and runs the download step of each
plugin they register. Importing avatar_runtime registers ours (avatar_runtime/plugin.py), so
that command fetches our face models along with every other plugin's files."""

import avatar_runtime  # noqa: F401  (registers the plugin)
