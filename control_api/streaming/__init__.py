"""Seed 004's frame streaming: `WS /api/v1/stream/ws` (Ditto's protocol), its session list and
statistics, and the sessions a WebRTC peer can watch.

`frames` is the contract between a session and its consumers; `messages` reads and checks what
a client sends (`emo` maps Ditto's emotions onto ours); `session` is one streaming session in
the control API, driving its own worker process (`python -m control_api.streaming.worker`,
`worker`); `manager` holds the sessions, their limits and statistics; `routes` is the WebSocket
and the two GET routes. Keep this file free of imports: worker processes import the package.
"""
