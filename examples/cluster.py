"""Publish to several queues of a Redis Cluster and consume them all:

    REDIS_URL=redis://10.0.0.1:7000 python cluster.py     (any node of your cluster)
    python cluster.py                                      (a throwaway 3-master cluster;
                                                            needs omniq-fast[embedded])

Each queue lives in one slot (its keys share the ``{queue}`` hash tag), so its scripts run
whole on one master, and the queues spread over the masters.
"""

import os

from omniq_fast import Client, JobCtx

QUEUES = ["emails", "thumbs", "billing"]


def handler(ctx: JobCtx) -> None:
    pass  # the work


def run(url: str) -> None:
    with Client(url) as client:  # the cluster is found on first use
        jobs = {queue: [{"n": n} for n in range(1000)] for queue in QUEUES}
        ids = client.publish_many_queues(jobs)  # one stream per master, in parallel
        print("published", {queue: len(ids[queue]) for queue in QUEUES}, "cluster:", client.is_cluster)
        # One consumer per queue, each talking to its queue's master; burst: stop when empty.
        stats = client.consume(QUEUES, handler, concurrency=4, burst=True)
        print(f"consumed {stats.succeeded} of {stats.handled} jobs")


if __name__ == "__main__":
    if "REDIS_URL" in os.environ:
        run(os.environ["REDIS_URL"])
    else:
        from omniq_fast.testing import EmbeddedCluster

        with EmbeddedCluster(masters=3) as cluster:
            run(cluster.url)
