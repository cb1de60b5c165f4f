"""Take docs/dashboard.png: real traffic on a few queues, the dashboard, a headless Chromium.

Usage: REDIS_URL=redis://127.0.0.1:6379/5 python scripts/dashboard_screenshot.py [seconds]
Publishes jobs to three demo queues (one grouped, with per-customer limits), consumes
them with handlers that fail now and then, lets the dashboard sample for a few minutes,
then screenshots the queue list. It deletes the demo queues' keys at the end.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time

import uvicorn
from selenium import webdriver

from omniq_fast import Client, Consumer, Job, JobCtx
from omniq_fast.dashboard import create_app

QUEUES = ("emails", "invoices", "reports")


def handler(ctx: JobCtx) -> None:
    time.sleep(random.uniform(0.002, 0.02))
    if random.random() < 0.08:
        raise RuntimeError("upstream timed out")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 180
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/5")
    client = Client(url)
    consumers = [Consumer(Client(url), q, handler, concurrency=2, stop_on_ctrl_c=False) for q in QUEUES]
    threads = [threading.Thread(target=c.run, daemon=True) for c in consumers]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(client, sample_interval_s=2),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    for t in threads:
        t.start()
    client.pause("reports")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.publish_many("emails", [{"to": f"user{i}@example.com"} for i in range(40)],
                            max_attempts=1)
        client.publish_many("invoices", [Job({"invoice": i}, gid=f"customer-{i % 12}",
                                             group_limit=2, max_attempts=1) for i in range(30)])
        client.publish_many("reports", [{"report": i} for i in range(3)])
        time.sleep(random.uniform(1.0, 2.0))
    profile = tempfile.mkdtemp()
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1360,760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")),
                              options=options)
    driver.get(f"http://127.0.0.1:{port}/")
    time.sleep(3)
    os.makedirs("docs", exist_ok=True)
    driver.save_screenshot("docs/dashboard.png")
    driver.quit()
    for c in consumers:
        c.stop()
    server.should_exit = True
    for q in QUEUES:
        keys = list(client.redis.scan_iter(match="{" + q + "}*", count=1000))
        if keys:
            client.redis.delete(*keys)
    print("wrote docs/dashboard.png")


if __name__ == "__main__":
    main()
