"""Offline jobs: avatar preparation (seed 000) and talking-video renders (seed 003).

`store` keeps them durably in SQLite, `runner` runs each attempt in a worker process
(`python -m control_api.jobs.worker`), `handlers` is what a worker does for each kind, and the
`routes_*` modules are the HTTP faces: the RunPod contract, the internal endpoints and renders.
Keep this file free of imports: worker processes import the package on every job.
"""
