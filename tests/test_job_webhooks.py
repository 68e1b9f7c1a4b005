"""webhooks.py on its own: delivery to a real receiver on loopback that checks every signature
it gets, retries driven by deliver_webhook + next_delay, and the signature scheme."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate

import pytest

from control_api.jobs.fetch import FetchPolicy
from control_api.jobs.webhooks import (
    WebhookPolicy,
    deliver_webhook,
    deliver_webhook_async,
    next_delay,
    parse_retry_after,
    should_retry,
    sign_webhook,
    verify_webhook,
)
from tests.loopback_http import QuietHandler, serving

SECRET = b"webhook-secret-0123456789abcdef"
PAYLOAD = {"id": "job-1", "status": "COMPLETED", "output": {"upload_url": "https://x/y.tar"}}
LOOPBACK = FetchPolicy(allowed_networks=("127.0.0.0/8",))


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    verified: bool


class Receiver:
    """Answers scripted (status, headers, body) replies in order (the last one repeats) and
    records each request with whether its signature checked out."""

    def __init__(self, *replies: tuple[int, dict[str, str], bytes]) -> None:
        self.replies = list(replies) or [(200, {}, b"ok")]
        self.received: list[Received] = []
        self.delay_s = 0.0
        self.lock = threading.Lock()

    def handler(self) -> type[QuietHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signature = self.headers.get("X-Avatar-Signature", "")
                with receiver.lock:
                    receiver.received.append(
                        Received(
                            time.monotonic(),
                            dict(self.headers),
                            body,
                            verify_webhook(body, signature, SECRET),
                        )
                    )
                    index = min(len(receiver.received), len(receiver.replies)) - 1
                    status, headers, reply = receiver.replies[index]
                time.sleep(receiver.delay_s)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    script = Receiver()
    with serving(script.handler()) as base:
        yield script, base + "/hooks/avatar"


def policy(**overrides: object) -> WebhookPolicy:
    values: dict[str, object] = {"secret": SECRET, "backoff_s": 0.05, "fetch": LOOPBACK}
    values.update(overrides)
    return WebhookPolicy(**values)  # type: ignore[arg-type]


def test_delivered_signed_and_verifiable(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    result = deliver_webhook(url, PAYLOAD, policy(), event_id="evt-1")
    assert (result.ok, result.status, result.error) == (True, 200, None)
    [got] = script.received
    assert got.verified
    assert json.loads(got.body) == PAYLOAD
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "avatar-agents-webhooks/1"
    assert got.headers["X-Avatar-Event-Id"] == "evt-1"
    assert got.headers["X-Avatar-Signature"].startswith("t=")


def test_a_server_error_is_retried_until_delivered(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    script.replies = [(500, {}, b"database down"), (200, {}, b"ok")]
    chosen = policy()
    attempt, delays = 1, []
    while True:  # what the job store's scheduler does, without the store
        result = deliver_webhook(url, PAYLOAD, chosen, event_id="evt-2")
        if result.ok or not should_retry(result, attempt, chosen):
            break
        delays.append(next_delay(attempt, chosen, result.retry_after))
        time.sleep(delays[-1])
        attempt += 1
    assert result.ok and attempt == 2
    assert [r.verified for r in script.received] == [True, True]
    assert {r.headers["X-Avatar-Event-Id"] for r in script.received} == {"evt-2"}
    assert 0.025 <= delays[0] <= 0.05
    assert script.received[1].at - script.received[0].at >= delays[0]


def test_a_client_error_is_permanent(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    script.replies = [(400, {}, b'{"detail": "unknown job\x00"}')]
    result = deliver_webhook(url, PAYLOAD, policy(), event_id="evt-3")
    assert (result.ok, result.status, result.retryable) == (False, 400, False)
    assert result.error == 'webhook receiver answered HTTP 400: {"detail": "unknown job "}'
    assert not should_retry(result, 1, policy())
    for status in (408, 429, 502, 503):
        script.replies = [(status, {}, b"")]
        assert deliver_webhook(url, PAYLOAD, policy(), event_id="e").retryable, status
    script.replies = [(301, {"Location": "http://127.0.0.1:1/"}, b"")]
    moved = deliver_webhook(url, PAYLOAD, policy(), event_id="e")
    assert (moved.ok, moved.retryable) == (False, False)
    assert "redirects are not followed" in (moved.error or "")


def test_retry_after_is_honoured(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    script.replies = [(429, {"Retry-After": "1"}, b"slow down"), (200, {}, b"ok")]
    chosen = policy()
    first = deliver_webhook(url, PAYLOAD, chosen, event_id="evt-4")
    assert (first.status, first.retry_after, first.retryable) == (429, 1.0, True)
    delay = next_delay(1, chosen, first.retry_after)
    assert delay == 1.0  # far longer than the 0.05 s backoff: the receiver's wish wins
    time.sleep(delay)
    assert deliver_webhook(url, PAYLOAD, chosen, event_id="evt-4").ok
    assert script.received[1].at - script.received[0].at >= 1.0
    # An HTTP date works too, and an absurd wait is cut to retry_after_max_s.
    later = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after(later) or 0) <= 30
    assert next_delay(1, policy(retry_after_max_s=120), 86400.0) == 120
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_signature_checks() -> None:
    body = json.dumps(PAYLOAD).encode()
    now = 1_700_000_000
    header = sign_webhook(body, SECRET, now)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify_webhook(body, header, SECRET, now=now + 299)
    assert not verify_webhook(body + b" ", header, SECRET, now=now)  # tampered body
    assert not verify_webhook(body, header, b"another-secret", now=now)  # wrong secret
    assert not verify_webhook(body, header, SECRET, now=now + 301)  # stale
    assert not verify_webhook(body, header, SECRET, now=now - 301)  # from the future
    replayed = header.replace(f"t={now}", f"t={now + 600}")  # a fresh time on an old signature
    assert not verify_webhook(body, replayed, SECRET, now=now + 600)
    for broken in ("", "t=abc,v1=00", f"t={now}", "v1=" + "0" * 64, f"t={now},v1=zz"):
        assert not verify_webhook(body, broken, SECRET, now=now)
    rotated = f"t={now},v1={'0' * 64},v1={header.split('v1=')[1]}"
    assert verify_webhook(body, rotated, SECRET, now=now)


def test_internal_addresses_are_refused_by_default(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    result = deliver_webhook(url, PAYLOAD, WebhookPolicy(secret=SECRET), event_id="evt-5")
    assert (result.ok, result.status, result.retryable) == (False, None, False)
    assert "loopback" in (result.error or "")
    metadata = deliver_webhook(
        "http://169.254.169.254/latest", PAYLOAD, WebhookPolicy(secret=SECRET), event_id="e"
    )
    assert not metadata.ok and "link-local" in (metadata.error or "")
    bad_scheme = deliver_webhook("file:///tmp/x", PAYLOAD, policy(), event_id="e")
    assert not bad_scheme.ok and not bad_scheme.retryable
    assert script.received == []


def test_unsigned_when_no_secret(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    assert deliver_webhook(url, PAYLOAD, policy(secret=None), event_id="evt-6").ok
    assert "X-Avatar-Signature" not in script.received[0].headers


def test_network_failures_are_retryable(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused = deliver_webhook(f"http://127.0.0.1:{closed_port}/", PAYLOAD, policy(), event_id="e")
    assert (refused.ok, refused.status, refused.retryable) == (False, None, True)
    assert "could not connect" in (refused.error or "")
    script.delay_s = 1.0
    started = time.monotonic()
    slow = deliver_webhook(url, PAYLOAD, policy(timeout_s=0.3), event_id="e")
    assert time.monotonic() - started < 0.9
    assert (slow.ok, slow.retryable) == (False, True)
    assert "did not answer within 0.3 s" in (slow.error or "")


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    chosen = WebhookPolicy(secret=None, backoff_s=1.0, backoff_max_s=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)]:
        samples = [next_delay(attempt, chosen, None) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples), attempt
        assert max(samples) - min(samples) > ceiling / 10  # jittered, not one fixed value
    assert next_delay(10_000, chosen, None) <= 10.0


async def test_async_variant_runs_off_the_loop(receiver: tuple[Receiver, str]) -> None:
    script, url = receiver
    result = await deliver_webhook_async(url, PAYLOAD, policy(), event_id="evt-7")
    assert result.ok and script.received[0].verified
