"""Webhook deliveries for finished jobs, driven by the supervisor's loop and kept in the store.

A job that ends with a `webhook_url` gets `webhook_state = pending` in the same transaction as
its final status. Every tick, due deliveries are sent (webhooks.py signs and posts them, off the
event loop); a failure is scheduled again with backoff until the attempts run out. Because the
schedule is in the store, a restart resumes the retries where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..config import Settings
from .store import Job, JobStoreBase

log = logging.getLogger("control_api.jobs")

_BATCH = 16
_HOLD_MARGIN_S = 30.0
"""A claimed delivery stays this long past the webhook timeout before it is due again."""
_SENDERS = 4
"""Deliveries in flight at once. They block on slow receivers (up to the webhook timeout), so
they get threads of their own rather than the loop's default pool the routes rely on."""


class WebhookDispatcher:
    def __init__(
        self,
        store: JobStoreBase,
        settings: Settings,
        secret: str,
        *,
        payload: Callable[[Job], dict[str, Any]],
        owner: str = "",
    ) -> None:
        self._store = store
        self._settings = settings
        self._secret = secret
        self._payload = payload
        self.owner = owner
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._senders = ThreadPoolExecutor(_SENDERS, thread_name_prefix="webhook")

    async def tick(self) -> None:
        free = _SENDERS - len(self._in_flight)
        if free <= 0:
            return
        # Claimed, not just read: instances sharing the store each send a webhook once. The
        # hold outlasts one delivery attempt, whose outcome is recorded before it ends.
        hold_s = self._settings.webhook_timeout_s + _HOLD_MARGIN_S
        due = await asyncio.to_thread(
            self._store.claim_webhooks, self.owner, min(free, _BATCH), hold_s=hold_s
        )
        for job in due:
            if job.id not in self._in_flight:
                task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.id}")
                self._in_flight[job.id] = task
                task.add_done_callback(functools.partial(self._forget, job.id))

    def _forget(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(job_id, None)

    async def close(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._senders.shutdown(wait=False, cancel_futures=True)

    async def _deliver(self, job: Job) -> None:
        assert job.webhook_url is not None and job.webhook_event_id is not None
        from . import webhooks

        policy = make_policy(self._settings, self._secret)
        try:
            send = functools.partial(
                webhooks.deliver_webhook,
                job.webhook_url,
                self._payload(job),
                policy,
                event_id=job.webhook_event_id,
            )
            result = await asyncio.get_running_loop().run_in_executor(self._senders, send)
        except Exception:  # a bug here must not become a tight retry loop
            log.exception("job %s: webhook delivery failed", job.id)  # the details: the log
            message = "internal error while sending the webhook"
            result = webhooks.WebhookResult(False, None, message, None, True)
        attempt = job.webhook_attempts + 1
        retry_at = None
        if webhooks.should_retry(result, attempt, policy):
            retry_at = time.time() + webhooks.next_delay(attempt, policy, result.retry_after)
        error = None if result.ok else (result.error or f"HTTP {result.status}")
        if not result.ok:
            log.info("job %s: webhook attempt %d failed: %s", job.id, attempt, error)
        await asyncio.to_thread(
            self._store.webhook_attempted,
            job.id,
            job.webhook_event_id,
            delivered=result.ok,
            error=error,
            retry_at=retry_at,
        )


def make_policy(settings: Settings, secret: str) -> Any:
    from .fetch import FetchPolicy
    from .webhooks import WebhookPolicy

    return WebhookPolicy(
        secret=secret.encode(),
        attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        backoff_max_s=max(settings.webhook_backoff_s, 600.0),
        timeout_s=settings.webhook_timeout_s,
        fetch=FetchPolicy(
            allow_private=settings.webhook_allow_private,
            allowed_networks=settings.fetch_allowed_cidrs,
            timeout_s=settings.webhook_timeout_s,
        ),
    )
