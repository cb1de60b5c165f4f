"""Fan-out with a completion callback: a parent job splits an album into one child job
per photo; the child that finishes last runs the callback, exactly once.

    python fanout.py

Here one process runs both queues and stops when the callback has run; in production the
parent and child queues would have workers of their own, and the callback would publish a
job or call a webhook.
"""

import os

from omniq_fast import Client, JobCtx, MultiConsumer

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
client = Client(REDIS_URL)


def on_album_done(album: str, photos: int) -> None:
    """The completion callback: runs once, in the last child to finish."""
    print(f"album {album}: all {photos} thumbnails done", flush=True)
    consumer.stop()  # this example's end; a real worker would go on


def handler(ctx: JobCtx) -> None:
    if ctx.queue == "albums":  # the parent: count the children first, then publish them
        album, photos = ctx.payload["album"], ctx.payload["photos"]
        ctx.check_completion.init_job_counter(f"album:{album}", len(photos))
        children = [{"album": album, "photo": p, "of": len(photos)} for p in photos]
        client.publish_many("thumbnails", children)
    else:  # a child: make one thumbnail, then count it
        remaining = ctx.check_completion.job_decrement(f"album:{ctx.payload['album']}")
        if remaining == 0:  # counted once per child id, so a retried child is no second 0
            on_album_done(ctx.payload["album"], ctx.payload["of"])


consumer = MultiConsumer(client, ["albums", "thumbnails"], handler, concurrency=4)

if __name__ == "__main__":
    client.publish("albums", {"album": "holiday", "photos": [f"img{n}.jpg" for n in range(20)]})
    consumer.run()
    client.close()
