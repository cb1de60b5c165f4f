"""``stats --watch`` in a real terminal: tmux runs it, capture-pane reads the screen."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid

import pytest

from cli_support import omniq_fast_command
from omniq_fast import Client
from support import wait_until


def test_stats_watch_table_updates(client: Client, qname: str, redis_url: str) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    server = "omniq-test-" + uuid.uuid4().hex[:8]  # a tmux server of this test's own
    client.publish(qname, {"n": 0})
    command = shlex.join(["env", f"REDIS_URL={redis_url}", omniq_fast_command(), "stats",
                          qname, "--watch", "--interval", "0.2"])  # fmt: skip

    def tmux_run(*args: str) -> str:
        return subprocess.run([tmux, "-L", server, *args], capture_output=True, text=True,
                              timeout=10).stdout  # fmt: skip

    def row(waiting: int) -> bool:
        screen = tmux_run("capture-pane", "-p", "-t", "watch")
        return re.search(rf"^\s*{qname}\s+running\s+{waiting}\s", screen, re.M) is not None

    try:
        tmux_run("new-session", "-d", "-s", "watch", "-x", "150", "-y", "20", command)
        wait_until(lambda: row(1), "the table with one waiting job", timeout=30)
        client.publish_many(qname, [{"n": i} for i in range(17)])
        wait_until(lambda: row(18), "the table updated to 18 waiting jobs", timeout=30)
        client.pause(qname)
        wait_until(lambda: re.search(rf"{qname}\s+paused\s+18\s",
                                     tmux_run("capture-pane", "-p", "-t", "watch")),
                   "the paused flag", timeout=30)  # fmt: skip
        tmux_run("send-keys", "-t", "watch", "C-c")
        # Ctrl+C ends the command, and with it the session.
        wait_until(lambda: "watch" not in tmux_run("list-sessions"), "the command to exit", 30)
    finally:
        subprocess.run([tmux, "-L", server, "kill-server"], capture_output=True, timeout=10)
