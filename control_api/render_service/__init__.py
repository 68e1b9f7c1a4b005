"""Seed 001's render service: one still frame of a portrait in an emotion
(`POST /api/v1/render/frame`), or several emotions of one portrait in one call
(`POST /api/v1/render/batch`), with any registered renderer.

`routes` reads and checks the requests on the event loop, `pool` keeps the worker processes
that render (started and warmed with the app, replaced when one dies), `worker` is such a
process (`python -m control_api.render_service.worker`: renderers per size, an LRU of analysed
portraits) and `protocol` the frames they exchange over the worker's stdin and stdout.
Keep this file free of imports: worker processes import the package.
"""
