"""The installed home of the ready agent worker: `avatar_agents.agent` is the checkout's `agent/`.

In the checkout the worker is the top-level folder `agent/` (`python -m agent dev|start`), as
the design card lays it out. An installed top-level package named `agent` would collide with a
user's own worker file: livekit's examples name it `agent.py`, and whichever of the two came
first on `sys.path` would shadow the other. So the wheel maps the folder `agent/` to the
package `avatar_agents.agent` (pyproject.toml, `[tool.setuptools.package-dir]`), and its
console scripts start it: `avatar-agent` (what `python -m agent` runs) and `avatar-worker`
(what `python -m agent.avatar_worker` runs). `agent/` imports itself only relatively, so the
same files work under both names.

This folder holds nothing else. The libraries install under their own names:
`avatar_runtime` (the avatar for any livekit agent), `renderers` and `control_api`.
"""
