"""Consume a queue until Ctrl+C or SIGTERM: the README's worker (python examples/quickstart_worker.py)."""

import os

from omniq_fast import Client, JobCtx

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")


def handler(ctx: JobCtx) -> None:
    print("got", ctx.job_id, ctx.payload, flush=True)  # return: done; raise: retry later


# Ctrl+C or SIGTERM: the running jobs finish and are acked, then consume() returns.
stats = Client(REDIS_URL).consume("demo", handler)
print("stopped:", stats)
