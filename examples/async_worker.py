"""An asyncio worker: ``async def`` handlers run as tasks on one loop, 64 at once.

    python async_worker.py          (Ctrl+C or SIGTERM stops it gracefully)
"""

import asyncio
import os

from omniq_fast import AsyncClient, JobCtx

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")


async def send_email(ctx: JobCtx) -> None:
    await asyncio.sleep(0.01)  # your I/O; raise to fail the attempt
    print("sent", ctx.payload["to"], flush=True)


async def main() -> None:
    async with AsyncClient(REDIS_URL) as client:
        stats = await client.consume("emails", send_email, concurrency=64)
    print("stopped:", stats, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
