"""The route table, and the OpenAPI document and docs page generated from it.

`app.py` adds exactly these routes to the router, so the description cannot drift from what
is served (tests/test_control_api.py checks both ways).
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .health import VERSION

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PARAM = re.compile(r"\{(\w+)\}")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "valid": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    public: bool = False
    body: dict[str, Any] | None = None
    """JSON schema of the request body (JSON unless `body_type` says otherwise)."""
    body_type: str = "application/json"
    status: int = 200
    tags: tuple[str, ...] = field(default=())


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "tags": list(route.tags),
        "responses": {
            str(route.status): {"description": "success"},
            "default": {
                "description": "an error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    params = _PARAM.findall(route.path)
    if params:
        operation["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.body_type: {"schema": route.body}},
        }
    operation["security"] = [] if route.public else [{"apiKey": []}, {"bearer": []}]
    return operation


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Avatar Agents control API",
            "version": VERSION,
            "description": "Sessions, live emotion and background, speech and events of "
            "LiveKit talking avatars. See docs/control-api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


_CSS = (
    "body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;"
    "color:#1b1f24}table{border-collapse:collapse;width:100%}th,td{text-align:left;"
    "padding:.35rem .6rem;border-bottom:1px solid #d8dee4;vertical-align:top}"
    "th{background:#f3f5f7}code{font-size:13px}"
)
_HEAD = "".join(f"<th>{h}</th>" for h in ("method", "path", "what it does", "body", "auth"))


def docs_page(routes: list[Route]) -> str:
    rows = []
    for route in routes:
        body = ""
        if route.body is not None:
            fields = route.body.get("properties", {})
            body = ", ".join(
                f"{name}{'' if name in route.body.get('required', []) else '?'}" for name in fields
            )
        rows.append(
            "<tr>"
            f"<td><code>{route.method}</code></td>"
            f"<td><code>{html.escape(route.path)}</code></td>"
            f"<td>{html.escape(route.summary)}</td>"
            f"<td>{html.escape(body)}</td>"
            f"<td>{'open' if route.public else 'key or JWT'}</td>"
            "</tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Avatar Agents control API</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style></head><body>
<h1>Avatar Agents control API <small>{VERSION}</small></h1>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. Send <code>X-API-Key</code> or
<code>Authorization: Bearer</code> on routes that are not open. Errors are
<code>{{"error": {{"code", "message"}}}}</code>.</p>
<table><thead><tr>{_HEAD}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></body></html>
"""
