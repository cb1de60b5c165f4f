"""Publish one job: the README's first example (python examples/quickstart_publish.py)."""

import os

from omniq_fast import Client

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

with Client(REDIS_URL) as client:
    job_id = client.publish("demo", {"hello": "world"})
    print("published", job_id)
