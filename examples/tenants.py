"""Grouped per-tenant jobs with limits: each tenant's jobs run in order, at most its plan's
number at once, while the tenants share the workers.

    python tenants.py

Exits 1 if a tenant ever had more jobs running than its limit.
"""

import os
import threading
import time
from collections import Counter

from omniq_fast import Client, JobCtx

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
LIMITS = {"acme": 2, "globex": 1, "initech": 3}  # jobs at once, per tenant

running: Counter[str] = Counter()
peak: Counter[str] = Counter()
lock = threading.Lock()


def handler(ctx: JobCtx) -> None:
    tenant = ctx.payload["tenant"]
    with lock:
        running[tenant] += 1
        peak[tenant] = max(peak[tenant], running[tenant])
    time.sleep(0.01)  # the tenant's work
    with lock:
        running[tenant] -= 1


with Client(REDIS_URL) as client:
    for tenant, limit in LIMITS.items():
        jobs = [{"tenant": tenant, "n": n} for n in range(20)]
        client.publish_many("reports", jobs, gid=f"tenant:{tenant}", group_limit=limit)
    # 8 workers, but no tenant gets more than its limit of them; burst: stop when done.
    stats = client.consume("reports", handler, concurrency=8, burst=True)

print(f"handled {stats.handled} jobs")
for tenant, limit in LIMITS.items():
    print(f"{tenant}: at most {peak[tenant]} at once (limit {limit})")
raise SystemExit(0 if all(peak[t] <= LIMITS[t] for t in LIMITS) else 1)
