"""Shared by the dashboard tests: jobs in given states, and the CSRF token of a page."""

from __future__ import annotations

import re
from typing import Any

from omniq_fast import Client

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def failed_job(client: Client, queue: str, payload: Any = None, error: str = "") -> str:
    """Publish a one-attempt job and fail it; returns its id."""
    job_id = client.publish(queue, payload or {"fail": True}, max_attempts=1)
    job = client.reserve(queue)
    assert job.job_id == job_id  # type: ignore[union-attr]
    client.ack_fail(queue, job_id, job.lease_token,  # type: ignore[union-attr]
                    error=error or "ValueError: boom")
    return job_id


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)
