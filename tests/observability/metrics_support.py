"""Scraping a real metrics endpoint and reading samples out of it."""

from __future__ import annotations

import urllib.request
from typing import Any, Optional

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``http://127.0.0.1:port/metrics``, parsed by prometheus_client's
    parser: ``{(sample name, labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        body = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> Optional[float]:
    """The sample ``name{labels}`` (labels exactly), or ``None`` when absent."""
    return samples.get((name, frozenset(labels.items())))

