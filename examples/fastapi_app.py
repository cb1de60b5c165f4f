"""A FastAPI app that publishes a job per request:

    uvicorn fastapi_app:app            (pip install fastapi uvicorn)

One AsyncClient for the app, opened in the lifespan: requests share its connection, and
publishes awaited in the same event-loop turn go out as one batch.
"""

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from omniq_fast import AsyncClient

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.omniq = AsyncClient(REDIS_URL)
    yield
    await app.state.omniq.close()


app = FastAPI(lifespan=lifespan)


@app.post("/signup")
async def signup(email: str) -> dict[str, str]:
    job_id = await app.state.omniq.publish("emails", {"to": email, "subject": "Welcome"})
    return {"job_id": job_id}
