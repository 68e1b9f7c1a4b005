"""Signed completion callbacks: one delivery attempt at a time, retried by the caller.

A webhook is a JSON POST to the URL a job was submitted with. Each request carries

* `X-Avatar-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, so the
  receiver can check that the body came from this service and is recent (`verify_webhook`);
  with no secret configured the header is left out and receivers cannot tell;
* `X-Avatar-Event-Id`: the same for every attempt of one event, so a receiver that got an
  attempt whose answer was lost can recognise the retry and drop it;
* `Content-Type: application/json` and `User-Agent: avatar-agents-webhooks/1`.

Delivery is stateless: `deliver_webhook` makes one attempt and says whether it is worth
retrying; the job store records attempts and schedules the next one `next_delay` seconds later,
so retries survive a restart. The URL passes the same address rules as downloads (outbound.py):
no callbacks to loopback, private or metadata addresses unless the policy allows them.
Redirects are not followed (a POST must not be replayed at another address).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import math
import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from .outbound import (
    Deadline,
    Exchange,
    FetchError,
    FetchPolicy,
    describe_failure,
    open_request,
    parse_target,
)

USER_AGENT = "avatar-agents-webhooks/1"
SIGNATURE_HEADER = "X-Avatar-Signature"
EVENT_ID_HEADER = "X-Avatar-Event-Id"
RETRYABLE_STATUSES = frozenset({408, 429})
_ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class WebhookPolicy:
    secret: bytes | None = field(repr=False)
    """HMAC key for X-Avatar-Signature; None sends webhooks unsigned."""
    attempts: int = 5
    """Attempts per event, the first included."""
    backoff_s: float = 1.0
    """The delay after the first failed attempt; it doubles with each further one."""
    backoff_max_s: float = 60.0
    timeout_s: float = 10.0
    """One attempt, from connecting to the end of the answer."""
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    """Which addresses may receive webhooks (the same rules as downloads)."""
    retry_after_max_s: float = 3600.0
    """The longest Retry-After honoured; a longer one is cut to this."""


@dataclass(frozen=True)
class WebhookResult:
    ok: bool
    status: int | None
    """The receiver's HTTP status; None when none came (refused address, network error)."""
    error: str | None
    """Why it failed, for the job's record; None when ok."""
    retry_after: float | None = None
    """Seconds the receiver asked to wait (Retry-After on a 429 or 503), if it did."""
    retryable: bool = False
    """A later attempt may succeed: 5xx, 408, 429, timeouts and network errors."""


def sign_webhook(body: bytes, secret: bytes, timestamp: int) -> str:
    """The X-Avatar-Signature value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={int(timestamp)},v1={_hmac_hex(body, secret, int(timestamp))}"


def verify_webhook(
    body: bytes, header: str, secret: bytes, *, tolerance_s: int = 300, now: int | None = None
) -> bool:
    """True when `header` signs exactly `body` with `secret` and its timestamp is within
    `tolerance_s` of `now` (default: the clock). Several v1 values may be present (a receiver
    rotating secrets may be sent either); one matching is enough."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in (header or "").split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures or not secret:
        return False
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _hmac_hex(body, secret, timestamp).encode()
    # Check every candidate, so the time taken does not say which one matched.
    matches = [hmac.compare_digest(expected, s.encode("utf-8", "replace")) for s in signatures]
    return any(matches)


def _hmac_hex(body: bytes, secret: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for `payload`."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def deliver_webhook(
    url: str, payload: dict[str, Any], policy: WebhookPolicy, *, event_id: str
) -> WebhookResult:
    """POST `payload` to `url` once. Never raises for a failed delivery: the result says what
    happened and whether another attempt is worthwhile."""
    body = webhook_body(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: event_id,
    }
    if policy.secret:
        headers[SIGNATURE_HEADER] = sign_webhook(body, policy.secret, int(time.time()))
    try:
        target = parse_target(url)
    except FetchError as error:
        return WebhookResult(False, None, f"webhook not sent: {error.message}")
    deadline = Deadline(policy.timeout_s)
    try:
        with open_request(
            target, policy.fetch, deadline, method="POST", body=body, headers=headers
        ) as exchange:
            status = exchange.status
            answer = _read_some(exchange)
            retry_after = parse_retry_after(exchange.header("Retry-After"))
    except FetchError as error:
        # A refused address is configuration: retrying will not change it. DNS trouble or a
        # refused connection may pass (a receiver restarting), so those are worth another try.
        retryable = error.code != "url_host_not_allowed"
        return WebhookResult(False, None, f"webhook not sent: {error.message}", None, retryable)
    except TimeoutError:
        message = f"webhook receiver {target.origin} did not answer within {policy.timeout_s:g} s"
        return WebhookResult(False, None, message, retryable=True)
    except (OSError, http.client.HTTPException) as error:
        return WebhookResult(False, None, describe_failure(error, target), retryable=True)
    if 200 <= status < 300:
        return WebhookResult(True, status, None)
    if 300 <= status < 400:
        message = (
            f"webhook receiver answered HTTP {status} (a redirect); redirects are not followed"
        )
        return WebhookResult(False, status, message)
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    message = f"webhook receiver answered HTTP {status}" + (f": {answer}" if answer else "")
    return WebhookResult(False, status, message, retry_after, retryable)


async def deliver_webhook_async(
    url: str, payload: dict[str, Any], policy: WebhookPolicy, *, event_id: str
) -> WebhookResult:
    """`deliver_webhook` off the event loop (it blocks on DNS and sockets)."""
    return await asyncio.to_thread(deliver_webhook, url, payload, policy, event_id=event_id)


def should_retry(result: WebhookResult, attempt: int, policy: WebhookPolicy) -> bool:
    """Whether to schedule another attempt after attempt number `attempt` (1-based)."""
    return not result.ok and result.retryable and attempt < policy.attempts


def next_delay(attempt: int, policy: WebhookPolicy, retry_after: float | None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): `backoff_s` doubled per
    attempt, capped at `backoff_max_s`, with jitter (between half and all of it, so receivers
    that failed together are not retried together), and never sooner than the receiver's
    Retry-After (itself capped at `retry_after_max_s`)."""
    exponent = min(max(attempt, 1) - 1, 62)  # no float overflow for absurd attempt numbers
    ceiling = min(policy.backoff_s * 2.0**exponent, policy.backoff_max_s)
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = max(delay, min(retry_after, policy.retry_after_max_s))
    return delay


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds ("120") or an HTTP date."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a zone-less one is read as such
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0)


def _read_some(exchange: Exchange) -> str:
    """The start of the receiver's answer, printable, for the error message."""
    try:
        raw = exchange.read_chunk(4096)
    except (OSError, http.client.HTTPException):
        return ""
    text = raw.decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:_ERROR_BODY_CHARS]
